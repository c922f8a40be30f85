"""Emulators of Twilio: the REST API, Media Streams, webhooks and the phone network behind them."""
