# kubernaut-py: one image for every component (`kubernaut run --controllers ...`).
# Build: docker build -t ghcr.io/kubernaut/kubernaut-py:0.1.0 .

# -- build: the package and its pinned dependencies in a virtualenv, byte-compiled ahead of time
# (the root filesystem is read-only at run time, so nothing can be compiled later) -------------------
FROM python:3.11.14-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/kubernaut
COPY pyproject.toml README.md ./
COPY src ./src
RUN /opt/kubernaut/bin/pip install . \
 && /opt/kubernaut/bin/python -m compileall -q /opt/kubernaut/lib

# -- run: the same base, the virtualenv, an unprivileged user -------------------------------------------
FROM python:3.11.14-slim-bookworm
RUN groupadd --gid 65532 kubernaut \
 && useradd --uid 65532 --gid 65532 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin kubernaut \
 && mkdir -p /var/lib/kubernaut \
 && chown 65532:65532 /var/lib/kubernaut
COPY --from=build /opt/kubernaut /opt/kubernaut
ENV PATH=/opt/kubernaut/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
USER 65532:65532
EXPOSE 9090 9443 8080
ENTRYPOINT ["kubernaut"]
CMD ["run", "--help"]
