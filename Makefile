# The two commands a newcomer needs: `make demo` and `make test`.
# Everything else here is what those two are made of.

PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
SOURCES = operator tests bench

.PHONY: help venv controlplane helm kube-score alertmanager cluster-deps cluster lint typecheck test crds lock demo bench clean

help:
	@echo "make test          set up everything, lint, type-check and run the tests"
	@echo "make demo          run the whole product locally on five sample alarms"
	@echo "make controlplane  build or reuse the local kube-apiserver + etcd"
	@echo "make helm          build or reuse helm (the chart's tests use it)"
	@echo "make kube-score    build or reuse kube-score (the chart is scored with it)"
	@echo "make alertmanager  build or reuse Prometheus Alertmanager (the interop tests use it)"
	@echo "make cluster-deps  install the Debian packages of the cluster and browser tests (root)"
	@echo "make cluster       build or reuse the node's binaries and the local base image"
	@echo "make crds          regenerate crds/ (and the chart's copy) from the models"
	@echo "make bench         measure ingest, a storm, the pipeline, memory, evidence (JSON)"
	@echo "make lock          re-resolve requirements.lock from pyproject.toml"

# The venv is rebuilt when the lock or the project's metadata change.
# Quiet on stdout (progress goes to stderr): `make bench > results.json` is JSON.
$(VENV)/.installed: requirements.lock pyproject.toml
	@echo "setting up $(VENV) from requirements.lock" >&2
	@$(PYTHON) -m venv $(VENV)
	@$(BIN)/pip install --quiet --upgrade pip >&2
	@$(BIN)/pip install --quiet -r requirements.lock >&2
	@$(BIN)/pip install --quiet --no-deps --no-build-isolation -e . >&2
	@touch $@

venv: $(VENV)/.installed

controlplane: venv
	@$(BIN)/python -m incident_operator.devstack.binaries >&2

helm: venv
	$(BIN)/python -m incident_operator.devstack.helm

kube-score: venv
	$(BIN)/python -m incident_operator.devstack.kubescore

alertmanager: venv
	$(BIN)/python -m incident_operator.devstack.alertmanager

# containerd, runc, buildah, chromium...: only what is missing, silent when all is there.
cluster-deps:
	@tests/cluster/install-packages.sh

# kubelet, controller-manager, scheduler, kube-proxy; the debootstrap base and
# pause images. Built here, with progress lines, rather than silently inside pytest.
cluster: venv controlplane cluster-deps
	@$(BIN)/python -m incident_operator.devstack.binaries --node >&2
	@$(BIN)/python -m incident_operator.devstack.image >&2

lint: venv
	$(BIN)/ruff check $(SOURCES)
	$(BIN)/ruff format --check $(SOURCES)

typecheck: venv
	$(BIN)/mypy

test: venv controlplane helm kube-score alertmanager cluster-deps cluster lint typecheck
	$(BIN)/pytest

# The chart ships the same files; a test fails when the two differ.
crds: venv
	$(BIN)/incident-operator crds --write crds
	$(BIN)/incident-operator crds --write charts/incident-operator/crds

lock:
	rm -rf .lock-venv
	$(PYTHON) -m venv .lock-venv
	.lock-venv/bin/pip install --quiet --upgrade pip
	.lock-venv/bin/pip install --quiet 'setuptools>=77' -e '.[test]'
	.lock-venv/bin/pip freeze --all --exclude-editable > requirements.lock
	rm -rf .lock-venv

# The dev stack on embedded defaults, five sample alarms, and what became of them.
demo: venv controlplane
	$(BIN)/python -m incident_operator.devstack.demo

# Benchmarks: one JSON document on stdout, a readable table on stderr.
bench: venv controlplane
	@$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
