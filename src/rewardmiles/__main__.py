from rewardmiles.cli.main import app

app(prog_name="rewardmiles")
