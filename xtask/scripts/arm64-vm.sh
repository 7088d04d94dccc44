#!/bin/bash
# The aarch64 static binary on a stock Debian arm64 kernel, in qemu-system-aarch64
# (software emulation), running one integration test executable once per backend.
#
#   xtask/scripts/arm64-vm.sh [TEST_NAME [TEST_FILE]]
#   (default: allocations_are_counted_exactly_per_namespace in stats)
#
# A first version, kept apart from xtask/src/vm/ (which boots amd64 guests) until it is
# folded in there as an architecture of its own. Needs root, target/dist/ from
# `cargo xtask dist`, and installs qemu-system-arm when missing. Everything the guest
# runs is arm64: Debian bookworm's kernel, busybox-static, nftables and iproute2 with
# their libraries, fetched with apt-get through a private configuration under
# target/vm-arm64/apt (the machine's apt sources and architectures are left alone),
# the static ctscope and the test executable cross-built with cargo-zigbuild.
# The console is saved in target/vm-arm64/console.log.
set -euo pipefail

test_name=${1:-allocations_are_counted_exactly_per_namespace}
test_file=${2:-stats}
ws=$(cd "$(dirname "$0")/../.." && pwd)
dir=$ws/target/vm-arm64
bin=$ws/target/dist/ctscope-aarch64-unknown-linux-musl
[ -f "$bin" ] || { echo "no $bin: run cargo xtask dist first" >&2; exit 2; }
command -v qemu-system-aarch64 >/dev/null ||
  apt-get install -y -qq --no-install-recommends qemu-system-arm
start=$(date +%s)

# A private apt configuration for bookworm arm64.
apt=$dir/apt
mkdir -p "$apt"/{state/lists/partial,cache/archives/partial,etc/none}
echo "deb [arch=arm64] http://deb.debian.org/debian bookworm main" > "$apt/etc/sources.list"
cat > "$apt/apt.conf" <<EOF
APT::Architecture "arm64";
APT::Architectures { "arm64"; };
Dir::State "$apt/state";
Dir::State::status "$apt/state/status";
Dir::Cache "$apt/cache";
Dir::Etc::SourceList "$apt/etc/sources.list";
Dir::Etc::SourceParts "$apt/etc/none";
Dir::Etc::Preferences "$apt/etc/none";
Dir::Etc::PreferencesParts "$apt/etc/none";
EOF
touch "$apt/state/status"
export APT_CONFIG=$apt/apt.conf
root=$dir/root
if [ ! -d "$root/boot" ]; then
  apt-get update -qq
  kernel=$(apt-cache search --names-only '^linux-image-6\.1\.0-[0-9]+-arm64$' |
    cut -d' ' -f1 | sort -V | tail -1)
  tools="busybox-static nftables iproute2"
  libs=$(apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts \
    --no-breaks --no-replaces --no-enhances --no-pre-depends $tools 2>/dev/null |
    grep -v '^ ' | grep -v '^<' | sort -u | tr '\n' ' ')
  rm -rf "$dir/debs" "$root.partial"; mkdir -p "$dir/debs" "$root.partial"
  (cd "$dir/debs" && apt-get download -q "$kernel" $tools $libs)
  for d in "$dir"/debs/*.deb; do dpkg-deb -x "$d" "$root.partial"; done
  mv "$root.partial" "$root"
  rm -rf "$dir/debs"
fi
unset APT_CONFIG
rel=$(ls "$root/lib/modules")

# The test executable for aarch64 (musl, static), as cargo reports it.
# zig as `cargo xtask dist` installed it (target/tools/ziglang/<version>), if it did.
zig=$(ls -d "$ws"/target/tools/ziglang/* 2>/dev/null | tail -1 || true)
exe=$(cd "$ws" && PYTHONPATH=$zig cargo zigbuild --target aarch64-unknown-linux-musl \
  -p ctscope-integration --test "$test_file" --message-format=json 2>"$dir/build.log" |
  grep -o "\"executable\":\"[^\"]*/$test_file-[^\"]*\"" | cut -d'"' -f4 | tail -1)
[ -x "$exe" ] || { cat "$dir/build.log" >&2; exit 1; }

# The initramfs.
stage=$dir/stage
rm -rf "$stage"; mkdir -p "$stage"/{bin,sbin,lib/aarch64-linux-gnu,t,proc,sys,dev,tmp,run}
cp "$root/bin/busybox" "$stage/bin/"
cp -a "$root/lib/ld-linux-aarch64.so.1" "$stage/lib/"
cp -a "$root"/lib/aarch64-linux-gnu/*.so* "$root"/usr/lib/aarch64-linux-gnu/*.so* \
  "$stage/lib/aarch64-linux-gnu/" 2>/dev/null || true
cp "$root/usr/sbin/nft" "$stage/sbin/nft"
cp "$root/bin/ip" "$stage/sbin/ip"
depmod -b "$root" "$rel"
mods=()
for m in crc32c_generic nf_defrag_ipv4 nf_defrag_ipv6 nfnetlink nf_conntrack \
  nf_conntrack_netlink nf_tables nft_ct veth; do
  while read -r kind path _; do
    [ "$kind" = insmod ] || continue
    rp=${path#"$root"}
    case " ${mods[*]-} " in *" $rp "*) ;; *) mods+=("$rp") ;; esac
  done < <(modprobe -d "$root" -S "$rel" --show-depends "$m")
done
for rp in "${mods[@]}"; do
  mkdir -p "$stage/$(dirname "$rp")"
  cp "$root/$rp" "$stage/$rp"
done
printf '%s\n' "${mods[@]}" > "$stage/modules.list"
cp "$bin" "$stage/t/ctscope"
cp "$exe" "$stage/t/test"
# Schemas the tests read from the source tree's path.
mkdir -p "$stage$ws"; cp -a "$ws/docs" "$stage$ws/docs"; mkdir -p "$stage$ws/tests"
cat > "$stage/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs run /run
mount -t bpf bpf /sys/fs/bpf
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null
ip link set lo up
echo "ARM64-VM-KERNEL $(uname -r) $(uname -m) cpus=$(nproc) up=$(cut -d' ' -f1 /proc/uptime)"
for p in $(cat /modules.list); do insmod $p || echo "ARM64-VM-INSMOD-FAILED $p"; done
/t/ctscope --version
# Attaching takes about a minute under emulation (a second on the host).
export CTSCOPE_BIN=/t/ctscope RUST_BACKTRACE=1 CTSCOPE_TEST_SLOWDOWN=8
name=$(sed -n 's/.*ctscope\.test=\([^ ]*\).*/\1/p' /proc/cmdline)
for b in kprobe tracepoint; do
  export CTSCOPE_BACKEND=$b
  echo "ARM64-VM-RUN $b $(cut -d' ' -f1 /proc/uptime)"
  /t/test --test-threads=1 --exact "$name" 2>&1
  echo "ARM64-VM-RESULT $b rc=$? $(cut -d' ' -f1 /proc/uptime)"
done
poweroff -f
INIT
chmod +x "$stage/init"
(cd "$stage" && find . | cpio -o -H newc --quiet | gzip -1) > "$dir/initrd.cpio.gz"

# Boot. Single-threaded TCG, as for the amd64 guests (xtask/src/vm/boot.rs).
boot=$(date +%s)
timeout 1800 qemu-system-aarch64 -M virt -accel tcg,thread=single -cpu max -m 2048 -smp 2 \
  -nographic -no-reboot -kernel "$root/boot/vmlinuz-$rel" -initrd "$dir/initrd.cpio.gz" \
  -append "console=ttyAMA0 quiet panic=-1 oops=panic ctscope.test=$test_name" \
  </dev/null | tee "$dir/console.log" | grep -E '^(ARM64-VM|test |test result)'
end=$(date +%s)
echo "arm64 VM: prepared in $((boot - start)) s, booted and tested in $((end - boot)) s"
[ "$(grep -c 'ARM64-VM-RESULT .* rc=0 ' "$dir/console.log")" = 2 ]
