"""The operator console: server-rendered pages under `/console` for the support desk, on the same
services as the admin API (`rewardmiles.admin`), behind the same operator sessions."""
