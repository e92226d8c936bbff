"""The data layer: dataset specs, the IOB reader, tags <-> spans, MRC queries, features and batches.

Nothing here knows about training, tracking or Ray: it turns files into validated sentences and
sentences into model inputs.
"""
