"""The read-only web view of remediations (`kubernaut ui`): `views` reads what an operator sees, `server`
renders it as HTML pages."""
