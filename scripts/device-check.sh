#!/usr/bin/env bash
# The device check: a signed deploy archive installs offline and runs on arm64.
#
#   sudo bash scripts/device-check.sh [BUNDLE VIDEO]    (EDGESIGHT_CHECK_KEEP=1 keeps the arm64 root for a look)
#
# Bootstraps a Debian 12 arm64 root (Raspberry Pi OS Bookworm's base; cached in
# /var/cache/edgesight/arm64-root, EDGESIGHT_ARM64_ROOT moves it) and runs it under qemu-user
# emulation of the profile's CPU (Cortex-A76 for rpi5). A model bundle (default: the one `edgesight demo --fast` makes, with its dashcam
# video) is packed for the rpi5 profile with its offline wheelhouse, signed with a throw-away
# key, staged into a copy of the root with `edgesight deploy --target --trust`, installed by the
# archive's own install.sh inside the root with networking off (unshare -n). Every frame of the
# video is written once here as a PNG (00000.png, ...; PNG is lossless), and `edgesight run
# --source` reads that folder in the root and here, so both machines start from the same pixels.
# scripts/device_kernels.py then runs there and here on the same input tensors, and
# scripts/device_compare.py compares each frame's label and top score (where the labels agree):
#   end_to_end                    edgesight run on the PNG frames on each machine, matched by frame
#                                 number and file name;
#   same_input_default_kernels    the model on this machine's input tensors of those frames on both,
#                                 with LiteRT's default (XNNPACK) kernels;
#   same_input_reference_kernels  the same with the reference kernels (BUILTIN_REF);
#   video_end_to_end              edgesight run on the video itself, reported, not a criterion: each
#                                 machine decodes it with its own OpenCV/FFmpeg (the root: OpenCV
#                                 4.10, pinned by the profile; here whatever the venv has), a lossy
#                                 decoder's output differs between builds, and the JSON gives by how
#                                 many grey levels the decoded inputs differ and whether this
#                                 machine's kernels on the root's decoded inputs give the root's
#                                 scores.
# It passes when, end to end on the PNG frames, the labels agree on at least 98 % of frames and
# every score difference is at most 0.02, and the reference kernels are bit-identical on the same
# input. The largest differences are also given as steps of the model's int8 logits tensor (the
# softmax's input): one step moves a probability by up to a quarter of its scale, 0.021 for the
# demo's calibrated model, so one step of a kernel's different rounding can move a score by more
# than 0.02.
# The device check mounts /proc and /sys in the root: XNNPACK picks its kernels from the CPU
# features in /sys, and without them its arm64 outputs differ more. The JSON records Python,
# numpy, OpenCV and ai-edge-litert of both machines. The emulated invoke time is printed too: it
# shows the model ran, not how fast a Pi is. Results: benchmarks/results/device_check.json.
#
# Needs root and Debian packages only: qemu-user-static, mmdebstrap (installed when missing).
# The apt packages of the profile (python3-picamera2, ...) exist only on Raspberry Pi OS, so the
# install skips apt (EDGESIGHT_SKIP_APT=1) and the runs read the frames and the video instead of
# the camera.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
VENV="${EDGESIGHT_VENV:-.venv}"
ES="$REPO/$VENV/bin/edgesight"
PY="$REPO/$VENV/bin/python"
ROOT_CACHE="${EDGESIGHT_ARM64_ROOT:-/var/cache/edgesight/arm64-root}"
PROFILE="${EDGESIGHT_CHECK_PROFILE:-rpi5}"
# qemu emulates the profile's own CPU: its default ("max") turns on instruction-set extensions
# that no Pi has and whose emulation gives XNNPACK's int8 kernels wrong results.
case "$PROFILE" in
    rpi5) CPU=cortex-a76 ;;
    rpi4) CPU=cortex-a72 ;;
    *) CPU=cortex-a53 ;;  # rpi-zero-2w, coral-devboard
esac
export QEMU_CPU="${QEMU_CPU:-$CPU}"

say() { printf 'device-check: %s\n' "$*"; }
die() { printf 'device-check: error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (mmdebstrap, binfmt_misc and chroot need it): sudo bash scripts/device-check.sh"
[ -x "$ES" ] || die "$ES not found: run bash scripts/test.sh (or scripts/demo.sh) first to make the venv"

need=""
command -v mmdebstrap >/dev/null || need="$need mmdebstrap"
[ -x /usr/bin/qemu-aarch64-static ] || need="$need qemu-user-static"
command -v ssh-keygen >/dev/null || need="$need openssh-client"
if [ -n "$need" ]; then
    say "installing$need"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $need >/dev/null
fi
if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
fi
if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
    cat /usr/lib/binfmt.d/qemu-aarch64.conf >/proc/sys/fs/binfmt_misc/register
fi

# Raspberry Pi OS ships Python 3, venv and the OpenSSH client (install.sh checks signatures with
# ssh-keygen); a cached root without them is made again.
if [ ! -x "$ROOT_CACHE/usr/bin/python3" ] || [ ! -x "$ROOT_CACHE/usr/bin/ssh-keygen" ]; then
    rm -rf "$ROOT_CACHE"
    say "bootstrapping a Debian 12 arm64 root in $ROOT_CACHE (about 5 minutes, once)"
    rm -rf "$ROOT_CACHE.partial"
    mkdir -p "$(dirname "$ROOT_CACHE")"
    mmdebstrap --quiet --arch=arm64 --variant=apt \
        --include=python3,python3-venv,python3-pip,libgl1,libglib2.0-0,openssh-client \
        bookworm "$ROOT_CACHE.partial"
    mv "$ROOT_CACHE.partial" "$ROOT_CACHE"
fi

WORK=$(mktemp -d /tmp/edgesight-device-check.XXXXXX)
ROOT="$WORK/root"
cleanup() {
    status=$?
    for m in proc sys; do mountpoint -q "$ROOT/$m" 2>/dev/null && umount "$ROOT/$m"; done
    if { [ "$status" != 0 ] && [ -z "${EDGESIGHT_CHECK_CLEAN:-}" ]; } || [ -n "${EDGESIGHT_CHECK_KEEP:-}" ]; then
        say "kept $WORK for a look (the arm64 runs' events are in root/tmp/arm64.jsonl and root/tmp/arm64-video.jsonl)"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT

if [ $# -ge 2 ]; then
    BUNDLE=$(realpath "$1"); VIDEO=$(realpath "$2")
else
    say "making a bundle and a video with edgesight demo --fast"
    "$ES" demo --fast --out "$WORK/demo" >"$WORK/demo.log" 2>&1 || { cat "$WORK/demo.log"; die "edgesight demo failed"; }
    BUNDLE="$WORK/demo/model-int8"; VIDEO="$WORK/demo/drive.mp4"
fi
# A demo video's ground truth (drive.json beside it) names the window the signs appear in.
ROI_ARGS=()
truth="${VIDEO%.*}.json"
if [ -f "$truth" ]; then
    ROI_ARGS=(--roi "$("$PY" -c 'import json,sys; print(",".join(map(str, json.load(open(sys.argv[1]))["roi"])))' "$truth")")
fi
RUN_ARGS=(--threshold 0 --smooth 1 --stats-interval 0 -q "${ROI_ARGS[@]}")

say "copying the arm64 root"
cp -a "$ROOT_CACHE" "$ROOT"
ssh-keygen -q -t ed25519 -N '' -C device-check -f "$WORK/release-key"

say "packing $BUNDLE for $PROFILE with its wheelhouse, signed"
"$ES" bundle "$BUNDLE" --profile "$PROFILE" --sign "$WORK/release-key" -o "$WORK/archive.tar.gz"
say "archive: $(du -h "$WORK/archive.tar.gz" | cut -f1)"
"$ES" deploy "$WORK/archive.tar.gz" --target "$ROOT" --trust "$WORK/release-key.pub"

mount -t proc proc "$ROOT/proc"
mount -t sysfs sys "$ROOT/sys"
installer=$(cd "$ROOT" && ls -d opt/edgesight/firstboot/*/install.sh | head -n 1)
[ -n "$installer" ] || die "no first-boot installer staged under $ROOT/opt/edgesight/firstboot"
say "installing inside the arm64 root with no network: /$installer"
t0=$(date +%s)
EDGESIGHT_SKIP_APT=1 unshare -n chroot "$ROOT" /bin/sh "/$installer" 2>&1 | sed 's/^/  /'
say "installed in $(( $(date +%s) - t0 )) s"

quiet() { sed '/^INFO: Created TensorFlow Lite/d; s/^/  /'; }
say "writing every frame of the video as PNG here, for both machines"
"$PY" scripts/device_kernels.py frames "$VIDEO" --out "$WORK/frames" 2>&1 | quiet
cp -a "$WORK/frames" "$ROOT/tmp/frames"
cp "$VIDEO" "$ROOT/tmp/video.mp4"
say "running edgesight on the PNG frames and on the video inside the arm64 root"
for run in "frames arm64.jsonl" "video.mp4 arm64-video.jsonl"; do
    set -- $run
    unshare -n chroot "$ROOT" /opt/edgesight/current/venv/bin/edgesight run /opt/edgesight/current/model \
        --source "/tmp/$1" --jsonl "/tmp/$2" "${RUN_ARGS[@]}" | sed 's/^/  /'
done
unshare -n chroot "$ROOT" /opt/edgesight/current/venv/bin/edgesight benchmark /opt/edgesight/current/model \
    --runs 20 --warmup 3 --json /tmp/arm64-bench.json >/dev/null
"$ES" run "$BUNDLE" --source "$WORK/frames" --jsonl "$WORK/x86.jsonl" "${RUN_ARGS[@]}" >/dev/null
"$ES" run "$BUNDLE" --source "$VIDEO" --jsonl "$WORK/x86-video.jsonl" "${RUN_ARGS[@]}" >/dev/null
"$ES" benchmark "$BUNDLE" --runs 50 --json "$WORK/x86-bench.json" >/dev/null

# The model input tensors of the PNG frames and of the video, made on each machine; then the
# same (this machine's) tensors of the PNG frames on both, default and reference kernels (/sys
# stays mounted: XNNPACK picks its kernels from the CPU features it reads there).
say "making input tensors of the PNG frames and the video here and inside the arm64 root"
"$PY" scripts/device_kernels.py decode "$BUNDLE" "$WORK/frames" "${ROI_ARGS[@]}" --out "$WORK/x86-inputs.npz" 2>&1 | quiet
"$PY" scripts/device_kernels.py decode "$BUNDLE" "$VIDEO" "${ROI_ARGS[@]}" --out "$WORK/x86-video-inputs.npz" 2>&1 | quiet
cp scripts/device_kernels.py "$WORK/x86-inputs.npz" "$ROOT/tmp/"
for src in "frames arm64-inputs.npz" "video.mp4 arm64-video-inputs.npz"; do
    set -- $src
    unshare -n chroot "$ROOT" /opt/edgesight/current/venv/bin/python /tmp/device_kernels.py decode \
        /opt/edgesight/current/model "/tmp/$1" "${ROI_ARGS[@]}" --out "/tmp/$2" 2>&1 | quiet
done
say "running the model on this machine's input tensors inside the arm64 root (the reference kernels take minutes emulated)"
t0=$(date +%s)
unshare -n chroot "$ROOT" /opt/edgesight/current/venv/bin/python /tmp/device_kernels.py invoke \
    /opt/edgesight/current/model /tmp/x86-inputs.npz --out /tmp/arm64-kernels.npz 2>&1 | quiet
say "done in $(( $(date +%s) - t0 )) s"
"$PY" scripts/device_kernels.py invoke "$BUNDLE" "$WORK/x86-inputs.npz" --out "$WORK/x86-kernels.npz" 2>&1 | quiet
"$PY" scripts/device_kernels.py invoke "$BUNDLE" "$ROOT/tmp/arm64-video-inputs.npz" --out "$WORK/x86-on-arm64-video-inputs.npz" 2>&1 | quiet

mkdir -p benchmarks/results
"$PY" scripts/device_compare.py "$ROOT/tmp/arm64.jsonl" "$WORK/x86.jsonl" "$ROOT/tmp/arm64-bench.json" "$WORK/x86-bench.json" \
    --inputs "$WORK/x86-inputs.npz" "$ROOT/tmp/arm64-inputs.npz" \
    --kernels "$WORK/x86-kernels.npz" "$ROOT/tmp/arm64-kernels.npz" \
    --video "$ROOT/tmp/arm64-video.jsonl" "$WORK/x86-video.jsonl" \
    --video-inputs "$WORK/x86-video-inputs.npz" "$ROOT/tmp/arm64-video-inputs.npz" \
    --host-on-arm64-video-inputs "$WORK/x86-on-arm64-video-inputs.npz" \
    --profile "$PROFILE" --cpu "$QEMU_CPU" --out benchmarks/results/device_check.json
say "passed; benchmarks/results/device_check.json"
