"""`bioner annotate`: a model run over a corpus of any size on Ray Data, resumable, recorded in MLflow.

Completion is recorded per shard (an input file) by a marker file written atomically after the shard's
output, and not by Ray Data's checkpointing (`DataContext.checkpoint_config`, Ray 2.60). That one
records row IDs as a `Write` sink's blocks are written, and only for plans that start at a `read_*`
datasource and end at a `write_*` sink: this job's rows are shards whose output the actors write
themselves, and the driver must iterate the rows for progress. It loads every ID done into memory
before a run, keeps its files on storage the whole cluster sees, and a kill between a data file and
its checkpoint entry leaves rows written twice; a marker after a whole-file rename leaves a shard
either done or redone from scratch, so every document is written exactly once.
"""

from .job import AnnotateOptions, AnnotateResult, run_annotate

__all__ = ["AnnotateOptions", "AnnotateResult", "run_annotate"]
