"""The `mnistlab serve` web page and JSON API: create_app(model) builds the app, serve() runs it."""
