rule split:
    input:
        unpack(get_split_input),
    output:
        train="data/split/train.csv",
        val="data/split/val.csv",
        test="data/split/test.csv",
        counts="data/split/counts.csv",
        unassigned="data/split/unassigned.csv",
    log:
        "logs/split.log",
    conda:
        ENV
    params:
        cfg=PARAMS,
        watched=stage_params("split"),
    shell:
        cli("soundstage --params {params.cfg} split {input.shards} --manifest {input.manifest} --out-dir data/split")
