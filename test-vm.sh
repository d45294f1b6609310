#!/usr/bin/env bash
# RAVE's NixOS images and VM test, from a machine with Nix (flakes) and KVM.
#
#   ./test-vm.sh health                  what this machine has: Nix, flakes, KVM, disk, memory
#   ./test-vm.sh build --phase p0|p1|p2  build an image (qcow2) and print its path
#   ./test-vm.sh test [--driver]         run the NixOS VM test (tests/rave-vm.nix) in the
#                                        sandbox, or with --driver its driver outside it
#                                        (nix run .#tests.rave-vm)
#   ./test-vm.sh run [--phase p0|p1|p2|p2-trial] --headless
#                                        boot an image; 3002 and 2222 (ssh) forwarded
#   ./test-vm.sh ci                      what the pipeline runs: check, build p2, test
#
# See docs/deploy.md. Memory: Nix builds are capped by NIX_CONFIG below so a
# 4 GB runner is enough; the VM test itself takes 2.5 GiB.
set -euo pipefail
cd "$(dirname "$0")"

export NIX_CONFIG="${NIX_CONFIG:-experimental-features = nix-command flakes
max-jobs = 2
cores = 4}"

die() { echo "test-vm.sh: $*" >&2; exit 1; }

need_nix() {
  command -v nix >/dev/null 2>&1 \
    || die "Nix is not installed. Install it (https://nixos.org/download) or use a NixOS machine; Debian's nix-bin (2.8) is too old for nixpkgs 25.11 (needs 2.18+)."
  local version
  version=$(nix --version | awk '{print $NF}')
  if [ "$(printf '2.18\n%s\n' "$version" | sort -V | head -n1)" != "2.18" ]; then
    die "Nix $version is older than 2.18, the oldest nixpkgs 25.11 supports."
  fi
  nix flake --help >/dev/null 2>&1 || die "this Nix has no flakes; add 'experimental-features = nix-command flakes' to nix.conf."
}

need_kvm() {
  [ -e /dev/kvm ] || die "/dev/kvm is missing: the VM test needs KVM (enable virtualisation, or run on a runner tagged 'kvm')."
  [ -r /dev/kvm ] && [ -w /dev/kvm ] || die "/dev/kvm exists but $(id -un) cannot use it: add the user to the 'kvm' group."
}

phase_output() {
  case "${1:-}" in
    p0) echo p0 ;;
    p1) echo p1-production ;;
    p2) echo p2-production ;;
    p2-trial) echo p2-trial ;;
    *) die "--phase must be p0, p1, p2 or p2-trial (got '${1:-}')" ;;
  esac
}

parse_phase() {
  PHASE=p2
  HEADLESS=0
  while [ $# -gt 0 ]; do
    case "$1" in
      --phase) PHASE="${2:-}"; shift 2 ;;
      --phase=*) PHASE="${1#--phase=}"; shift ;;
      --headless) HEADLESS=1; shift ;;
      *) die "unknown argument: $1" ;;
    esac
  done
}

cmd_health() {
  local ok=1
  if (need_nix) 2>/dev/null; then echo "nix: $(nix --version), flakes on"; else echo "nix: $( (need_nix) 2>&1 | sed 's/^test-vm.sh: //')"; ok=0; fi
  if [ -e /dev/kvm ] && [ -w /dev/kvm ]; then echo "kvm: usable"; else echo "kvm: not usable (the VM test and 'run' need it)"; ok=0; fi
  echo "cpus: $(nproc)"
  echo "memory: $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
  echo "disk free here: $(df -h . | awk 'NR==2 {print $4}')"
  [ "$ok" = 1 ] || exit 1
}

cmd_build() {
  parse_phase "$@"
  local out
  out=$(phase_output "$PHASE")
  need_nix
  nix build ".#$out" --print-out-paths --no-link
}

cmd_test() {
  need_nix
  need_kvm
  case "${1:-}" in
    --driver) nix run .#tests.rave-vm ;;
    "") nix build .#checks.x86_64-linux.vm --print-build-logs --no-link ;;
    *) die "unknown argument: $1" ;;
  esac
}

cmd_run() {
  parse_phase "$@"
  [ "$HEADLESS" = 1 ] || die "only --headless is supported (serial console on this terminal)"
  need_nix
  need_kvm
  case "$PHASE" in
    p0) exec nix run .#qemu ;;
    *) exec nix run ".#$(phase_output "$PHASE")" ;;
  esac
}

cmd_ci() {
  need_nix
  # The pin is checked first: the lock's revisions and narHash values were
  # taken from public lock files, not computed (docs/ci.md).
  nix flake metadata
  nix flake check --no-build
  cmd_build --phase p2
  cmd_test
}

case "${1:-}" in
  health) shift; cmd_health "$@" ;;
  build) shift; cmd_build "$@" ;;
  test) shift; cmd_test "$@" ;;
  run) shift; cmd_run "$@" ;;
  ci) shift; cmd_ci "$@" ;;
  -h|--help|help|"") sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//' ;;
  *) die "unknown command '$1' (health, build, test, run, ci)" ;;
esac
