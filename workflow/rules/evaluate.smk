rule evaluate:
    input:
        unpack(get_evaluate_inputs),
    output:
        metrics="reports/evaluate/{model}/folds/{fold}/metrics.json",
        confusion=expand("reports/evaluate/{{model}}/folds/{{fold}}/confusion_{split}.json", split=["val", "test"]),
        confusion_test=report(
            "reports/evaluate/{model}/folds/{fold}/confusion_test.png",
            caption="../report/confusion_fold.rst",
            category="Folds",
            subcategory="{model}",
            labels={"model": "{model}", "fold": "{fold}", "figure": "confusion matrix, test"},
        ),
        confusion_val=report(
            "reports/evaluate/{model}/folds/{fold}/confusion_val.png",
            caption="../report/confusion_fold.rst",
            category="Folds",
            subcategory="{model}",
            labels={"model": "{model}", "fold": "{fold}", "figure": "confusion matrix, val"},
        ),
        predictions=expand("reports/evaluate/{{model}}/folds/{{fold}}/predictions_{split}.csv", split=["val", "test"]),
    log:
        "logs/evaluate/{model}/{fold}.log",
    conda:
        ENV
    params:
        cfg=PARAMS,
        watched=stage_params("evaluate"),
    shell:
        cli(
            "soundstage --params {params.cfg} evaluate --bundle {input.bundle} --folds {input.folds} --out-dir reports/evaluate/{wildcards.model}/folds/{wildcards.fold}"
        )


# Mean, std and per-fold values of every metric, the confusion matrix summed over the folds (counts,
# and shares of each actual class) and the test F1 per class; with more than one fold, an MLflow
# parent run over the folds' runs.
rule aggregate:
    input:
        unpack(get_aggregate_inputs),
    output:
        metrics="reports/evaluate/{model}/metrics.json",
        folds="reports/evaluate/{model}/folds.csv",
        folds_table=report(
            "reports/evaluate/{model}/folds.html",
            caption="../report/metrics.rst",
            category="Models",
            subcategory="{model}",
            labels={"model": "{model}", "figure": "metrics per fold"},
        ),
        confusion=expand("reports/evaluate/{{model}}/confusion_{split}.json", split=["val", "test"]),
        confusion_test=report(
            "reports/evaluate/{model}/confusion_test.png",
            caption="../report/confusion.rst",
            category="Models",
            subcategory="{model}",
            labels={"model": "{model}", "figure": "confusion matrix, test (counts)"},
        ),
        confusion_val=report(
            "reports/evaluate/{model}/confusion_val.png",
            caption="../report/confusion.rst",
            category="Models",
            subcategory="{model}",
            labels={"model": "{model}", "figure": "confusion matrix, val (counts)"},
        ),
        confusion_normalized=report(
            "reports/evaluate/{model}/confusion_test_normalized.png",
            caption="../report/confusion_normalized.rst",
            category="Models",
            subcategory="{model}",
            labels={"model": "{model}", "figure": "confusion matrix, test (shares)"},
        ),
        per_class_f1=report(
            "reports/evaluate/{model}/per_class_f1.png",
            caption="../report/per_class_f1.rst",
            category="Models",
            subcategory="{model}",
            labels={"model": "{model}", "figure": "F1 per class, test"},
        ),
        per_class_f1_csv="reports/evaluate/{model}/per_class_f1.csv",
        predictions=expand("reports/evaluate/{{model}}/predictions_{split}.csv", split=["val", "test"]),
    log:
        "logs/evaluate/{model}/aggregate.log",
    conda:
        ENV
    params:
        cfg=PARAMS,
        watched=stage_params("evaluate", "aggregate"),
    shell:
        cli(
            "soundstage --params {params.cfg} evaluate --aggregate --split-info {input.info} --out-dir reports/evaluate/{wildcards.model}"
        )


rule metrics:
    input:
        metrics=expand("reports/evaluate/{model}/metrics.json", model=MODELS),
        code=CODE["metrics"],
    output:
        "reports/metrics.json",
    log:
        "logs/metrics.log",
    conda:
        ENV
    params:
        cfg=PARAMS,
    shell:
        cli("soundstage --params {params.cfg} evaluate --summary --inputs {input.metrics} --out {output}")
        + " && cat {log}"
