"""The admin API (`/admin/v1`): the support desk's routes over the same services the CLI calls,
behind the operators package's credentials and roles (`operators.access`)."""
