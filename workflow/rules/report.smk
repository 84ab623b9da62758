# The dataset report and its figures: class balance, durations, and example clips (waveform, log-mel,
# MFCC of a few clips per class, drawn with `seed`), read from the processed audio and the saved
# feature matrices (the shard tables stand for them: their jobs write both).
rule report:
    input:
        "data/ingest/manifest.csv",
        "data/split/counts.csv",
        "data/split/folds.csv",
        expand("data/process/shards/{shard}.{ext}", shard=SHARDS, ext=["csv", "rejected.csv"]),
        expand("data/features/shards/{shard}.{ext}", shard=SHARDS, ext=["parquet", "rejected.csv"]),
        code=CODE["report"],
    output:
        md="reports/dataset/report.md",
        class_balance=report(
            "reports/dataset/class_balance.png",
            caption="../report/class_balance.rst",
            category="Dataset",
            labels={"figure": "class balance"},
        ),
        durations=report(
            "reports/dataset/durations.png",
            caption="../report/durations.rst",
            category="Dataset",
            labels={"figure": "durations"},
        ),
        rejected=report(
            "reports/dataset/rejected.html",
            caption="../report/rejected.rst",
            category="Dataset",
            labels={"figure": "rejected files"},
        ),
        formats=report(
            "reports/dataset/formats.html",
            caption="../report/formats.rst",
            category="Dataset",
            labels={"figure": "formats, sample rates, channels"},
        ),
        split_counts=report(
            "reports/dataset/split_counts.html",
            caption="../report/split_counts.rst",
            category="Dataset",
            labels={"figure": "split counts per class"},
        ),
        examples=report(
            directory("reports/dataset/examples"),
            patterns=["{label}/{clip}.png"],
            caption="../report/examples.rst",
            category="Examples",
            subcategory="{label}",
            labels={"class": "{label}", "clip": "{clip}"},
        ),
    log:
        "logs/report.log",
    conda:
        ENV
    params:
        cfg=PARAMS,
        n_shards=N_SHARDS,
        watched=stage_params("report"),
    shell:
        cli("soundstage --params {params.cfg} --n-shards {params.n_shards} report --out-dir reports/dataset")
