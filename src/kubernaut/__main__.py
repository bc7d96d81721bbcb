from kubernaut.cli import app

app()
