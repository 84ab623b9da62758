# A checkpoint: the folds (K of them, one per group in leave_one_group_out, one per value of a fold
# column) are known only once the split has run; the rules after it read them from folds.json.
checkpoint split:
    input:
        unpack(get_split_input),
    output:
        folds="data/split/folds.csv",
        info="data/split/folds.json",
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
