rule split:
    input:
        shards=expand("data/process/shards/{shard}.csv", shard=SHARDS),
        code=CODE["split"],
    output:
        train="data/split/train.csv",
        val="data/split/val.csv",
        test="data/split/test.csv",
        counts="data/split/counts.csv",
    log:
        "logs/split.log",
    conda:
        ENV
    params:
        cfg=PARAMS,
        watched=stage_params("split"),
    shell:
        cli("soundstage --params {params.cfg} split {input.shards} --out-dir data/split")
