# Build: install the locked dependencies into a virtual environment.
FROM python:3.11-slim AS build
COPY --from=ghcr.io/astral-sh/uv:0.9 /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PROJECT_ENVIRONMENT=/opt/ibt
WORKDIR /src
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --locked --no-dev --no-install-project
COPY workers ./workers
COPY producer ./producer
RUN uv sync --locked --no-dev --no-editable

# Run: the environment only, as an unprivileged user. Keys come from the environment at run
# time (compose passes them from the host or .env); none is baked into the image.
FROM python:3.11-slim
RUN useradd --create-home --uid 10001 ibt
COPY --from=build /opt/ibt /opt/ibt
ENV PATH=/opt/ibt/bin:$PATH PYTHONUNBUFFERED=1 IBT_HOME=/home/ibt/.cache/ibt
USER ibt
WORKDIR /home/ibt
CMD ["ibt", "--help"]
