# One image, two entry points:
#   incident-operator run        the operator (the default command)
#   incident-operator webhook    the ingest webhook
# The Helm chart in charts/incident-operator runs both from this image.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

# --- build: a wheel of the package, then a venv with it and its runtime deps --
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# The build backend, at the version the lock pins.
COPY requirements.lock ./
RUN pip install --constraint requirements.lock setuptools pip
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN pip wheel --no-deps --no-build-isolation --wheel-dir /wheels .
# The lock also pins the test tools; as constraints it only fixes versions,
# so exactly the package's runtime dependencies are installed, at the locked
# versions. The venv gets no pip of its own: nothing installs at run time.
RUN python -m venv --without-pip /opt/venv \
 && pip --python /opt/venv/bin/python install --constraint requirements.lock /wheels/*.whl

# --- run: the venv on a clean base, as an unprivileged user -------------------
FROM ${PYTHON_IMAGE}
# kopf names itself after the user (getpass.getuser), which needs a passwd
# entry; the numeric USER lets Kubernetes verify runAsNonRoot.
RUN groupadd --gid 10001 incident \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /tmp \
      --shell /usr/sbin/nologin incident
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
USER 10001:10001
# 8080: the webhook; 8081: the operator's liveness endpoint.
EXPOSE 8080 8081
ENTRYPOINT ["incident-operator"]
CMD ["run"]
