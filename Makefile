# Everything a fresh machine needs: `make demo` and `make test` create the virtual
# environment, install pinned dependencies (constraints.txt), and run.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
DEMO   ?= demo-data

.PHONY: install demo test bench lint lock clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check \
		--constraint constraints.txt --editable '.[test,dev]'
	touch $(STAMP)

install: $(STAMP)

# A day of a small cluster with attacks, ingested, then the first answers.
demo: install
	rm -rf $(DEMO)
	$(BIN)/kubetrail simulate --duration 24h --seed 7 --out $(DEMO)/audit.log \
		--scenario exec-shell --scenario secrets-dump --scenario bind-cluster-admin \
		--scenario brute-force
	$(BIN)/kubetrail --data-dir $(DEMO)/archive --no-progress ingest $(DEMO)/audit.log --cluster demo
	$(BIN)/kubetrail --data-dir $(DEMO)/archive stats
	$(BIN)/kubetrail --data-dir $(DEMO)/archive top users --limit 8
	$(BIN)/kubetrail --data-dir $(DEMO)/archive query --user '*@*' --verb create --verb delete \
		--verb patch --verb update --limit 15
	$(BIN)/kubetrail --data-dir $(DEMO)/archive query --resource pods/exec \
		--fields time,user,namespace,name,command,source_ip
	$(BIN)/kubetrail --data-dir $(DEMO)/archive top denied --limit 8
	$(BIN)/kubetrail --data-dir $(DEMO)/archive top source-ips --code 401 --limit 3
	$(BIN)/kubetrail --data-dir $(DEMO)/archive timeline --bucket 2h

test: install
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

bench: install
	$(BIN)/python bench/run.py

lint: install
	$(BIN)/ruff check src tests bench

# Re-pin every dependency to what is installed now (run after changing pyproject.toml).
lock: install
	$(BIN)/python -m pip freeze --exclude-editable | grep -v '^kubetrail' > constraints.txt

clean:
	rm -rf $(VENV) $(DEMO) .pytest_cache .ruff_cache build *.egg-info src/*.egg-info
