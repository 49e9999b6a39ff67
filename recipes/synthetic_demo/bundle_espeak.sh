#!/usr/bin/env bash
# Build a portable espeak-ng folder from Debian's .deb files, for a machine with no network and no
# espeak-ng installed (the GPU machine). Usage: bundle_espeak.sh OUT_DIR
#
# OUT_DIR/espeak-ng is a wrapper that sets LD_LIBRARY_PATH and ESPEAK_DATA_PATH to the folder and runs
# the real binary; pass it (or OUT_DIR itself) to synthesize.py --espeak. Needs apt-get (after
# 'apt-get update'), dpkg-deb and a C compiler, here only; the result needs glibc >= 2.34 and nothing else.
#
# libpcaudio (sound-card output) links PulseAudio and ALSA, which a server lacks and which espeak-ng
# never uses when it writes to stdout, so it is replaced by a stub of the same eight functions that
# reports "no audio device". espeak-ng is GPL-3+; the Debian copyright files go into OUT_DIR/licenses.
set -euo pipefail

out=${1:?usage: bundle_espeak.sh OUT_DIR}
packages=(espeak-ng espeak-ng-data libespeak-ng1 libsonic0 libpcaudio0)
for tool in apt-get dpkg-deb cc; do
    command -v "$tool" >/dev/null || { echo "bundle_espeak.sh: $tool not found (needs Debian with a C compiler)" >&2; exit 1; }
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && apt-get download -q "${packages[@]}" >/dev/null)
for deb in "$work"/*.deb; do
    dpkg-deb -x "$deb" "$work/root"
done

multiarch=$(ls -d "$work"/root/usr/lib/*-linux-gnu | head -n1)
rm -rf "$out"
mkdir -p "$out/bin" "$out/lib" "$out/licenses"
cp "$work/root/usr/bin/espeak-ng" "$out/bin/"
cp -a "$multiarch"/libespeak-ng.so.1* "$multiarch"/libsonic.so.0* "$out/lib/"
cp -r "$multiarch/espeak-ng-data" "$out/"
for pkg in "${packages[@]}"; do
    cp "$work/root/usr/share/doc/$pkg/copyright" "$out/licenses/$pkg.copyright"
done
(cd "$work" && ls ./*.deb) | sed 's|^\./||' > "$out/licenses/PACKAGES"

cat > "$work/pcaudio_stub.c" <<'EOF'
/* Stand-in for libpcaudio.so.0: espeak-ng links it for playback only; writing WAV never calls it. */
#include <stddef.h>
#include <stdint.h>
struct audio_object;
struct audio_object *create_audio_device_object(const char *d, const char *a, const char *s) { return NULL; }
int audio_object_open(struct audio_object *o, int f, uint32_t r, uint8_t c) { return -1; }
void audio_object_close(struct audio_object *o) {}
void audio_object_destroy(struct audio_object *o) {}
int audio_object_write(struct audio_object *o, const void *data, size_t n) { return -1; }
int audio_object_drain(struct audio_object *o) { return -1; }
int audio_object_flush(struct audio_object *o) { return -1; }
const char *audio_object_strerror(struct audio_object *o, int e) { return "no audio device in this bundle"; }
EOF
cc -shared -fPIC -O2 -Wl,-soname,libpcaudio.so.0 -o "$out/lib/libpcaudio.so.0" "$work/pcaudio_stub.c"

cat > "$out/espeak-ng" <<'EOF'
#!/bin/sh
# Run the bundled espeak-ng with its own libraries and voice data.
here=$(cd "$(dirname "$0")" && pwd)
LD_LIBRARY_PATH="$here/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" ESPEAK_DATA_PATH="$here" exec "$here/bin/espeak-ng" "$@"
EOF
chmod +x "$out/espeak-ng"

"$out/espeak-ng" --version >/dev/null
echo "bundled $(cat "$out/licenses/PACKAGES" | tr '\n' ' ')into $out ($(du -sh "$out" | cut -f1))"
