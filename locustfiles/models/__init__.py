"""Pure traffic models (no locust import): keys, operation mixes, value sizes, presets, shapes, retries."""
