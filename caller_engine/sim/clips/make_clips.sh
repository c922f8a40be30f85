#!/bin/sh
# Regenerate the caller clips: μ-law, 8 kHz, mono, headerless, leading/trailing silence trimmed.
# Needs espeak-ng and sox (Debian/Ubuntu: apt-get install -y espeak-ng sox).
# Usage: sh make_clips.sh   (writes the .ulaw files next to this script)
set -eu
cd "$(dirname "$0")"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

VOICE=${VOICE:-en-us}
SPEED=${SPEED:-165}
TRIM="silence 1 0.02 0.5% reverse silence 1 0.02 0.5% reverse"

say() {  # say NAME TEXT
    espeak-ng -v "$VOICE" -s "$SPEED" -w "$tmp/$1.wav" "$2"
    # shellcheck disable=SC2086
    sox "$tmp/$1.wav" -r 8000 -c 1 -e mu-law -t raw "$1.ulaw" $TRIM
}

say hello "Hello?"
say book_tomorrow "Hi, I'd like to book an appointment for tomorrow."
say ten_am "Ten in the morning works for me."
say name_alex "My name is Alex Morgan."
say text_confirmation "Yes, please text me a confirmation."
say goodbye "That's all, thank you. Goodbye."
say wait_question "Wait, sorry, can I ask something?"
say talk_to_someone "Can I talk to someone, please?"
say callback_yes "Yes, please have someone call me back."
say stop_calling "Please take me off your list. Don't call me again."
say voicemail "Hi, you've reached Alex Morgan. I can't take your call right now. Please leave a message after the tone."

# The answering machine's tone: 0.5 s of 1 kHz at half scale.
sox -n -r 8000 -c 1 -e mu-law -t raw beep.ulaw synth 0.5 sine 1000 vol 0.5
