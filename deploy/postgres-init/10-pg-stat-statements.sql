-- Run once by the postgres image on a fresh data folder (/docker-entrypoint-initdb.d), in POSTGRES_DB:
-- the server preloads pg_stat_statements, but its view exists only after CREATE EXTENSION, and
-- cachestorm's PostgreSQL sampler (cachestorm/scrape.py) reads it every second.
CREATE EXTENSION IF NOT EXISTS pg_stat_statements;
