"""Amazon Web Services wire pieces shared by the Bedrock client and its emulator: the
event-stream codec and Signature Version 4."""
