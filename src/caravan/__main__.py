from caravan.cli import app

app()
