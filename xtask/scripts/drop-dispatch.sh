#!/bin/bash
# Does every netfilter drop reach ctscope's drop program? (docs/drop-causes.md,
# "Drops no probe saw".) Floods a namespace whose table is full with refused UDP
# flows -- half over a veth whose receive side RPS spreads over the CPUs, half
# from inside -- and compares, per flood, the kernel's `drop` counter with the
# kfree_skb NETFILTER_DROP hits `perf stat` counts; at the end, ctscope's count
# and its drop program's run_cnt and recursion_misses (bpf_stats on meanwhile).
#
#   xtask/scripts/drop-dispatch.sh CTSCOPE_BINARY [FLOODS] [RPS_MASK] [-- ctscope args]
#
# Root; changes nf_conntrack_max and kernel.bpf_stats_enabled for the run and
# restores both; its two namespaces are removed on exit.
set -u
bin=${1:?usage: $0 CTSCOPE_BINARY [FLOODS] [RPS_MASK] [-- ctscope args]}
floods=${2:-20}
rps=${3:-3}
shift $(( $# < 3 ? $# : 3 ))
[ "${1:-}" = "--" ] && shift
extra=("$@")
reason=$(grep -o '{ [0-9]*, "NETFILTER_DROP" }' /sys/kernel/tracing/events/skb/kfree_skb/format | grep -o '[0-9]*' | head -1)
[ -n "$reason" ] || { echo "no NETFILTER_DROP in the kfree_skb tracepoint's format" >&2; exit 2; }
old_max=$(sysctl -n net.netfilter.nf_conntrack_max)
old_stats=$(sysctl -n kernel.bpf_stats_enabled)
ct=""
cleanup() {
    [ -n "$ct" ] && kill -INT "$ct" 2>/dev/null && wait "$ct" 2>/dev/null
    sysctl -qw net.netfilter.nf_conntrack_max="$old_max" kernel.bpf_stats_enabled="$old_stats"
    ip netns del ddtx 2>/dev/null; ip netns del ddrx 2>/dev/null
}
trap cleanup EXIT
ip netns add ddtx && ip netns add ddrx || exit 1
printf 'table inet t {\n chain o { type filter hook output priority 0; ct state new accept\n }\n chain p { type filter hook prerouting priority 0; ct state new accept\n }\n}\n' | ip netns exec ddrx nft -f -
ip -n ddrx link set lo up
ip -n ddtx link add vt type veth peer name vr netns ddrx
ip -n ddtx addr add 10.78.0.1/24 dev vt && ip -n ddrx addr add 10.78.0.2/24 dev vr
ip -n ddtx link set vt up && ip -n ddrx link set vr up
ip netns exec ddrx sh -c "echo $rps > /sys/class/net/vr/queues/rx-0/rps_cpus"
ip -n ddtx neigh replace 10.78.0.2 lladdr "$(ip netns exec ddrx cat /sys/class/net/vr/address)" dev vt nud permanent
# 40 assured entries that early drop never evicts, then a limit of 40.
for i in $(seq 1 40); do
    ip netns exec ddrx conntrack -I -p udp -s 10.9.0.$i -d 10.9.1.1 --sport 1 --dport 2 \
        -t 600 -u ASSURED,SEEN_REPLY >/dev/null 2>&1
done
sysctl -qw net.netfilter.nf_conntrack_max=40 kernel.bpf_stats_enabled=1
drops() {
    ip netns exec ddrx python3 -c "
t = open('/proc/net/stat/nf_conntrack').read().split(chr(10)); i = t[0].split().index('drop')
print(sum(int(l.split()[i], 16) for l in t[1:] if l.strip()))"
}
send='import socket,sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind((sys.argv[1], 0))
for i in range(400):
    try: s.sendto(b"ctscope", (sys.argv[2], int(sys.argv[3]) + i))
    except OSError: pass'
"$bin" stats --json --interval 0.5 "${extra[@]}" > /tmp/drop-dispatch.json 2>/dev/null &
ct=$!
sleep 3
runs() {
    bpftool prog show -j | python3 -c "
import json, sys
print(sum(p.get('run_cnt', 0) for p in json.load(sys.stdin)
          if p.get('name') in ('ct_drop', 'ct_drop_loc', 'noop_drop')))"
}
misses() {
    bpftool prog show -j | python3 -c "
import json, sys
print(sum(p.get('recursion_misses', 0) for p in json.load(sys.stdin)
          if p.get('name') in ('ct_drop', 'ct_drop_loc', 'noop_drop')))"
}
total_kernel=0; total_hits=0; total_runs=0; short_floods=0
for k in $(seq 1 "$floods"); do
    before=$(drops); runs_before=$(runs)
    perf stat -a -x, -o /tmp/drop-dispatch.stat -e skb:kfree_skb --filter "reason == $reason" -e skb:kfree_skb -- sh -c "
        ip netns exec ddtx taskset -c 0 python3 -c '$send' 10.78.0.1 10.78.0.2 20000 &
        ip netns exec ddrx taskset -c 0 python3 -c '$send' 127.0.0.1 127.0.0.1 20400 &
        wait; sleep 0.2" 2>/dev/null
    after=$(drops); runs_after=$(runs)
    nf=$(grep kfree_skb /tmp/drop-dispatch.stat | sed -n 1p | cut -d, -f1)
    all=$(grep kfree_skb /tmp/drop-dispatch.stat | sed -n 2p | cut -d, -f1)
    ran=$((runs_after - runs_before))
    note=""
    if [ "$ran" -lt "$all" ]; then note="  <- $((all - ran)) hits without a run"; short_floods=$((short_floods + 1)); fi
    echo "flood $k: kernel drop +$((after - before)), NETFILTER_DROP hits $nf, all kfree_skb hits $all, program runs $ran$note"
    total_kernel=$((total_kernel + after - before)); total_hits=$((total_hits + nf))
done
sleep 2
echo "kernel drops $total_kernel, NETFILTER_DROP hits $total_hits, floods with hits the program did not run for: $short_floods, recursion misses $(misses)"
kill -INT "$ct"; wait "$ct"; ct=""
tail -1 /tmp/drop-dispatch.json | python3 -c "
import json, sys
t = json.load(sys.stdin)['totals']
print('ctscope: table_full', t['drop_table_full'], 'probe misses', t['probe_misses'])"
