"""Training: the Trainer run, the plan of steps and rates, data preparation, and the objectives' recipes."""
