"""The credentials replay's emulators accept by default. A module of its own so that the
command line can name them without importing the emulators (and the `openai` types they
validate with) into every `caller-engine` process, the server's included."""

DEFAULT_ACCOUNT_SID = "AC" + "7e" * 16
DEFAULT_AUTH_TOKEN = "replay-auth-token"
DEFAULT_OPENAI_KEY = "sk-replay"
DEFAULT_PHONE_NUMBER = "+15550001111"
