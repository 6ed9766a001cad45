# Two entry points: `make demo` (train, export, score on scikit-learn's digits) and
# `make test`. Both create .venv on first use; nothing needs installing by hand.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test env reference-bundle clean

env: $(STAMP)

$(STAMP): pyproject.toml constraints-cpu.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -c constraints-cpu.txt -e '.[train,ray,dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/deepclust demo

test: $(STAMP)
	$(BIN)/pytest -q

# Rebuilds the reference bundle the tests score with (models/digits).
reference-bundle: $(STAMP)
	$(BIN)/deepclust train --data digits --k 10 --method kmeans --hidden 256,256,512 --out models/digits --overwrite --seed 0 --quiet

clean:
	rm -rf $(VENV) build dist *.egg-info
