# syntax=docker/dockerfile:1
FROM python:3.11-slim AS build
WORKDIR /src
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
COPY pyproject.toml README.md ./
COPY caller_engine ./caller_engine
RUN /opt/venv/bin/pip install .

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 app
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 ENVIRONMENT=production PORT=5050
WORKDIR /home/app
USER app
EXPOSE 5050
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
  CMD python -c "import os,urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('PORT','5050'), timeout=2); sys.exit(0)" || exit 1
# SIGTERM drains active calls (DRAIN_TIMEOUT) before exiting; give the platform's stop timeout room.
STOPSIGNAL SIGTERM
CMD ["caller-engine", "serve"]
