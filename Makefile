# Everything a fresh machine needs: `make demo` and `make test` create the virtual
# environment, install pinned dependencies (constraints.txt), and run.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
DEMO   ?= demo-data
KT     := $(BIN)/kubetrail --data-dir $(DEMO)/archive

.PHONY: install demo test bench lint lock clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check \
		--constraint constraints.txt --editable '.[test,dev]'
	touch $(STAMP)

install: $(STAMP)

# A day of a small cluster with attacks, ingested with detection, then the first answers.
demo: install
	@rm -rf $(DEMO)
	@echo "== simulating a day of a 3-node cluster, with four attacks =="
	@$(KT) simulate --duration 24h --nodes 3 --seed 7 --out $(DEMO)/audit.log \
		--scenario exec-shell --scenario secrets-dump --scenario bind-cluster-admin \
		--scenario brute-force
	@echo; echo "== ingesting it into $(DEMO)/archive, with the detection rules =="
	@$(KT) --no-progress ingest --detect $(DEMO)/audit.log --cluster demo
	@echo; echo "== the archive =="; $(KT) stats
	@echo; echo "== who talks to the API server most =="; $(KT) top users --limit 8
	@echo; echo "== what people changed (kubectl users: *@*) =="
	@$(KT) query --user '*@*' --verb create --verb delete --verb patch --verb update --limit 15
	@echo; echo "== who opened a shell in a pod, with which command =="
	@$(KT) query --resource pods/exec --fields time,user,namespace,name,command,source_ip
	@echo; echo "== what one of them did: who alice@example.com =="; $(KT) who alice@example.com --limit 8
	@echo; echo "== denied requests =="; $(KT) top denied --limit 8
	@echo; echo "== where failed logins (401) came from =="; $(KT) top source-ips --code 401 --limit 3
	@echo; echo "== requests over the day =="; $(KT) timeline --bucket 2h
	@echo; echo "== alerts raised while ingesting (medium and above) =="
	@$(KT) alerts --severity medium --limit 25
	@echo; echo "== is the audit policy any good? (the recommended one, linted) =="
	@$(KT) policy recommend --out $(DEMO)/policy.yaml && $(KT) policy lint $(DEMO)/policy.yaml

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
