"""Partner authentication: client credentials → signed JWT; bearer verification; sponsor scope."""
