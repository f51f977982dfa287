"""The `rewardmiles` command line."""
