# soundstage: raw audio -> processed -> splits -> features -> stats -> models -> evaluation.
# Every rule calls the `soundstage <stage>` CLI; the stage logic lives in src/soundstage/.
from snakemake.utils import min_version

min_version("9.0")


configfile: "params.yaml"


# `snakemake --report reports/report.html` (make report): the figures marked report(...) in the rules,
# with the captions of workflow/report/.
report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/demo.smk"
include: "workflow/rules/ingest.smk"
include: "workflow/rules/process.smk"
include: "workflow/rules/split.smk"
include: "workflow/rules/features.smk"
include: "workflow/rules/stats.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        get_final_outputs,


onsuccess:
    on_success()
