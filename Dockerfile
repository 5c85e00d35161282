# Zaqar with zaqar-otel, for docker-compose.yml (the demo stack) or as a starting point.
#   docker build -t zaqar-otel .
#   docker run -p 8888:8888 -e OTEL_EXPORTER_OTLP_ENDPOINT=http://collector:4318 zaqar-otel
# Serves zaqar_otel.zaqar.wsgi:application under gunicorn (pure Python, no compiler needed in a
# slim image); the WSGI app is built in each worker after the fork, so every worker has
# its own exporter thread. uWSGI works the same way (README: Production guide).
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
# zaqar[redis,mongodb], python-zaqarclient (the loadgen service), the OTel instrumentations
RUN pip install ".[all]" "gunicorn>=21" && rm -rf /src/build

COPY docker/zaqar.conf /etc/zaqar/zaqar.conf
ENV ZAQAR_CONFIG_FILE=/etc/zaqar/zaqar.conf \
    OTEL_SERVICE_NAME=zaqar

RUN useradd --system --uid 10001 --no-create-home zaqar
USER 10001
WORKDIR /tmp
EXPOSE 8888
CMD ["gunicorn", "--bind", "0.0.0.0:8888", "--workers", "2", "--timeout", "60", \
     "zaqar_otel.zaqar.wsgi:application"]
