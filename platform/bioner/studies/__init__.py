"""Studies: jobs made of training runs. The shared plumbing (parent and child runs, tags, resume
state), one training job, the tuning search, sweeps over a grid, and their reports."""
