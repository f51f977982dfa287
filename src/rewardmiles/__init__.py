"""rewardmiles: real-time loyalty-miles issuance platform."""

__version__ = "0.1.0"
