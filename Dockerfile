# A worker of after in a container (docs/deploy.rst). Build and run:
#   docker build -t after .
#   docker run -e AFTER_COUCHDB_URL=http://after:SECRET@db:5984 -p 9300:9300 after
#   docker run ... after after start billing        # another worker name
FROM python:3.11-slim
WORKDIR /app
COPY setup.py setup.cfg README.rst ./
COPY after ./after
RUN pip install --no-cache-dir . && useradd --create-home --uid 10001 after
COPY jobs ./jobs
USER after
# Logs: JSON on stderr only (the engine keeps them); /health and /metrics on every interface
ENV AFTER_JOBS=/app/jobs AFTER_HOME=/tmp/after AFTER_LOG_FORMAT=json \
    AFTER_METRICS_HOST=0.0.0.0 AFTER_METRICS_PORT=9300
EXPOSE 9300
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:9300/health', timeout=2).status != 200)"]
# SIGTERM stops gracefully within --grace: give `docker stop` more (docker stop -t 45)
STOPSIGNAL SIGTERM
CMD ["after", "start", "default", "--no-log-file", "--grace", "30"]
