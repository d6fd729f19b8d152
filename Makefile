# Two entry points on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv deps test lint typecheck pytest bench demo demo-vm demo-sim clean

# Debian packages the tests and the demo use: OCF resource agents (agents/ocf.py),
# iproute2 for network-namespace partition tests, etcd for the multi-host store and openssl
# for its certificates (store/etcd_tls.py; Debian priority "optional", so not always there);
# QEMU, a kernel and a static busybox for the guests (agents/guestimage.py): vm: services
# (agents/vm.py) and the watchdog-device test guest (tests/fence/guest.py); crun for ct: services
# (agents/ct.py, whose root filesystem is built from the same busybox: agents/rootfs.py).
OCF_DUMMY := /usr/lib/ocf/resource.d/heartbeat/Dummy
deps:
	@test -x $(OCF_DUMMY) && command -v ip >/dev/null && command -v etcd >/dev/null \
	  && command -v openssl >/dev/null \
	  && command -v qemu-system-x86_64 >/dev/null && ls /boot/vmlinuz-* >/dev/null 2>&1 \
	  && command -v crun >/dev/null \
	  && dpkg-query -W -f='$${Status}\n' busybox-static 2>/dev/null | grep -q '^install ok installed' || { \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    resource-agents iproute2 etcd-server openssl qemu-system-x86 linux-image-amd64 busybox-static crun >/dev/null; }

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check ha sim bench store agents actors cli fence admin tests/fence tests/store tests/agents tests/cli tests/live tests/admin

typecheck: venv
	$(BIN)/mypy ha sim bench cli actors store agents fence admin bus

# Two workers, a test file each at a time (module and package fixtures stay per worker): most
# of the suite's time is live clusters waiting on leases and timeouts, not CPU. PYTEST_WORKERS=0
# runs it in one process.
PYTEST_WORKERS ?= 2
pytest: venv deps
	$(BIN)/pytest -q -n $(PYTEST_WORKERS) --dist loadfile

# The whole suite: lint, types, tests. CI runs exactly this (.ci/run).
test: lint typecheck pytest

bench: venv
	$(BIN)/python -m bench sim

# a real 3-node cluster on loopback: services, a node killed, failover timed
demo: venv
	$(BIN)/python -m cli.demo

# the same with QEMU guests (vm: services, the built-in guest): one live migration timed, a node killed, its guest recovered
demo-vm: venv deps
	$(BIN)/python -m cli.demo_vm

# the same story in the simulator, with the reference's timing
demo-sim: venv
	$(BIN)/python -m sim.demo

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
