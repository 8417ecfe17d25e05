# One image for the reference targets and the Locust traffic (docker-compose.yml).
FROM python:3.11.7-slim
WORKDIR /app
COPY pyproject.toml setup.py README.md ./
COPY cachestorm cachestorm
COPY targets targets
COPY locustfiles locustfiles
COPY chaos chaos
COPY reports reports
RUN pip install --no-cache-dir .
EXPOSE 8000 8089
CMD ["python", "-m", "cachestorm.targets", "--host", "0.0.0.0", "--port", "8000"]
