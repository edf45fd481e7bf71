#!/bin/busybox sh
# The checks of tests/cgroup_v2.rs: PID 1 of the guest once init has switched to a tmpfs root.
# The real wrun on a kernel booted with cgroup_no_v1=all (cgroup v2 only, no systemd: wrun
# enables the controllers it needs itself). Each check prints one line, `check NAME ok` or
# `check NAME FAIL: DETAIL`; the last line is `cgroup-v2 done: N failed`, then the VM powers off.
/bin/busybox mkdir -p /proc /sys /dev /tmp /run /state /root /sbin /usr/bin /usr/sbin /mnt
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin HOME=/root WRUN_ROOT=/state
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs -o mode=0755 tmpfs /run
mount -t cgroup2 cgroup2 /sys/fs/cgroup
mount -t tmpfs tmpfs /tmp
mount -t tmpfs -o mode=0700 state /state
# Kernel messages (the OOM killer's report) would break check lines on the shared console.
dmesg -n 1
[ ! -e /overlay.ko ] || insmod /overlay.ko || echo "guest: overlay.ko did not load (images are copied)"
echo "guest: kernel $(uname -r); $(cat /proc/cmdline)"
echo "guest: booted in $(cut -d' ' -f1 /proc/uptime) s (guest clock)"

failed=0
ok() { echo "check $1 ok${2:+: $2}"; }
fail() {
  failed=$((failed + 1))
  echo "check $1 FAIL: $(printf '%s' "$2" | tr '\n' '|' | cut -c1-1500)"
}
# One line of a file, or `missing`.
value() { cat "$1" 2>/dev/null || echo missing; }
# `"KEY": VALUE` of wrun inspect's JSON (first match), quotes stripped.
field() { wrun inspect "$1" 2>/dev/null | sed -n "s/^ *\"$2\": \"\{0,1\}\([^\",]*\)\"\{0,1\},\{0,1\}\$/\1/p" | head -n 1; }

# v2-only: only the unified hierarchy exists and it offers the controllers wrun uses.
controllers=$(value /sys/fs/cgroup/cgroup.controllers)
if mount -t cgroup -o memory none /mnt 2>/dev/null; then
  umount /mnt
  fail v2-only "a v1 memory hierarchy could be mounted"
else
  case " $controllers " in
    *" memory "*" pids "*|*" pids "*" memory "*)
      case " $controllers " in *" cpu "*) ok v2-only "controllers: $controllers" ;; *) fail v2-only "no cpu controller: $controllers" ;; esac ;;
    *) fail v2-only "controllers: $controllers" ;;
  esac
fi

# hello: a plain run (compiles the module in the guest).
out=$(wrun run /samples/hello.wasm 2>/tmp/err); rc=$?
if [ $rc -eq 0 ] && [ "$out" = "Hello from WebAssembly in a wrun sandbox!" ]; then ok hello
else fail hello "exit $rc, stdout: $out, stderr: $(cat /tmp/err)"; fi

# born-in-cgroup: the sandbox is forked into its cgroup (clone3 with CLONE_INTO_CGROUP): the
# parent makes the cgroup before the fork and never moves the child (no "cgroup joined").
out=$(WRUN_TIMINGS=1 wrun run /samples/hello.wasm 2>/tmp/marks); rc=$?
order=$(grep -o 'parent \(cgroup created\|forked\|cgroup joined\)' /tmp/marks | tr '\n' ',')
if [ $rc -eq 0 ] && [ "$out" = "Hello from WebAssembly in a wrun sandbox!" ] && [ "$order" = "parent cgroup created,parent forked," ]; then
  ok born-in-cgroup "$order"
else fail born-in-cgroup "exit $rc, stdout: $out, parent's steps: $order, stderr: $(cat /tmp/marks)"; fi

# mount-template: the sandbox enters the mount namespace template (its root step marks "root
# entered", not "root pivoted"), pinned as a namespace in /run as on a host.
out=$(WRUN_TIMINGS=1 wrun run /samples/hello.wasm 2>/tmp/marks); rc=$?
pins=$(grep ' /run/wrun-namespaces/mnt-v1 ' /proc/self/mountinfo | grep -c ' - nsfs ')
if [ $rc -eq 0 ] && [ "$out" = "Hello from WebAssembly in a wrun sandbox!" ] && grep -q 'child root entered' /tmp/marks && [ "$pins" = 1 ]; then
  ok mount-template
else fail mount-template "exit $rc, stdout: $out, pins: $pins, stderr: $(cat /tmp/marks)"; fi

# shared-namespaces: a detached Wasm sandbox is in the pinned network and IPC namespaces (not
# the host's), and its parent made no network namespace of its own.
marks=$(WRUN_TIMINGS=1 wrun run /samples/hello.wasm 2>&1 >/dev/null)
id=$(wrun run -d /samples/idle.wasm 2>/tmp/err); rc=$?
sleep 1
pid=$(field "$id" Pid)
shared=""
for kind in net ipc; do
  pinned="$kind:[$(stat -L -c %i /run/wrun-namespaces/$kind-v1 2>/dev/null)]"
  own=$(readlink /proc/$pid/ns/$kind)
  host=$(readlink /proc/self/ns/$kind)
  [ "$own" = "$pinned" ] && [ "$own" != "$host" ] && shared="$shared$kind,"
done
wrun rm -f "$id" >/dev/null 2>&1
case "$marks" in *"parent network namespace"*) made=yes ;; *) made=no ;; esac
if [ $rc -eq 0 ] && [ "$shared" = "net,ipc," ] && [ "$made" = no ]; then
  ok shared-namespaces
else fail shared-namespaces "exit $rc, shared: $shared, parent made one: $made, pid: $pid, stderr: $(cat /tmp/err)"; fi

# clone3-refused: where clone3 is refused (a seccomp profile answering ENOSYS, as Docker's
# default one does), the sandbox is forked as on older kernels and the parent moves it in.
out=$(WRUN_TIMINGS=1 /samples/without-clone3 wrun run /samples/hello.wasm 2>/tmp/marks); rc=$?
order=$(grep -o 'parent \(cgroup created\|forked\|cgroup joined\)' /tmp/marks | tr '\n' ',')
if [ $rc -eq 0 ] && [ "$out" = "Hello from WebAssembly in a wrun sandbox!" ] && [ "$order" = "parent cgroup created,parent forked,parent cgroup joined," ]; then
  ok clone3-refused "$order"
else fail clone3-refused "exit $rc, stdout: $out, parent's steps: $order, stderr: $(cat /tmp/marks)"; fi

# exec-in-cgroup: `wrun exec` into a native container is forked into the container's cgroup
# (not moved): its own cgroup namespace shows it at the root.
wrun run -d --name ex --rootfs /rootfs sleep 60 >/dev/null 2>/tmp/err; rc=$?
out=$(WRUN_TIMINGS=1 wrun exec ex cat /proc/self/cgroup 2>/tmp/marks); erc=$?
born=$(grep -c "forked into the container's cgroup" /tmp/marks)
if [ $rc -eq 0 ] && [ $erc -eq 0 ] && [ "$out" = "0::/" ] && [ "$born" = 1 ]; then
  ok exec-in-cgroup "$out"
else fail exec-in-cgroup "run exit $rc, exec exit $erc, stdout: $out, stderr: $(cat /tmp/err /tmp/marks)"; fi
wrun rm -f ex >/dev/null 2>&1

# memory-grow-refused: --memory is a wasm-level budget: hog's memory.grow fails past it.
out=$(wrun run --memory 64m /samples/hog.wasm 2>/tmp/err); rc=$?
mib=${out#hog: memory.grow refused after }; mib=${mib% MiB}
free=$(wrun run /samples/hog.wasm 128 2>>/tmp/err)
if [ $rc -eq 0 ] && [ "$mib" -ge 32 ] 2>/dev/null && [ "$mib" -lt 64 ] && [ "$free" = "hog: grew 128 MiB" ]; then
  ok memory-grow-refused "refused after $mib MiB; unlimited: $free"
else fail memory-grow-refused "exit $rc, limited: $out, unlimited: $free, stderr: $(cat /tmp/err)"; fi

# oom-kill: a native workload that allocates past --memory is ended by the kernel's OOM killer
# in its cgroup; wrun reports 137, says so, and inspect records it.
wrun run --name oom --memory 32m --rootfs /rootfs dd if=/dev/zero of=/dev/null bs=200M count=1 >/dev/null 2>/tmp/err
rc=$?
oom=$(field oom OOMKilled); code=$(field oom ExitCode)
if [ $rc -eq 137 ] && grep -q "out of memory" /tmp/err && [ "$oom" = true ] && [ "$code" = 137 ]; then
  ok oom-kill "$(head -n 1 /tmp/err)"
else fail oom-kill "exit $rc, OOMKilled $oom, ExitCode $code, stderr: $(cat /tmp/err)"; fi
wrun rm oom >/dev/null 2>&1

# A detached Wasm container with every limit; its cgroup is read while it runs.
id=$(wrun run -d --name lim --memory 64m --cpus 0.5 --pids 16 /samples/idle.wasm 2>/tmp/err)
rc=$?
path=$(field lim CgroupPath)
cg=/sys/fs/cgroup/${path:-no-cgroup-path}
procs=""
for _ in $(seq 1 300); do
  [ $rc -eq 0 ] || break
  procs=$(cat "$cg/cgroup.procs" 2>/dev/null)
  [ -n "$procs" ] && break
  sleep 0.1
done
if [ $rc -eq 0 ] && [ "$path" = "wrun/$id" ] && [ -n "$procs" ]; then
  ok detached-in-cgroup "$cg, processes: $(echo $procs)"
else fail detached-in-cgroup "exit $rc, id $id, CgroupPath $path, cgroup.procs: $procs, stderr: $(cat /tmp/err)"; fi
# Every process of the container is in that cgroup as the kernel sees it.
wrong=""
for pid in $procs; do
  line=$(cat /proc/$pid/cgroup 2>/dev/null)
  [ "$line" = "0::/$path" ] || wrong="$wrong $pid:$line"
done
enabled=$(value "$cg/cgroup.controllers")
[ -z "$wrong" ] && [ -n "$procs" ] && ok processes-in-cgroup "controllers: $enabled" || fail processes-in-cgroup "/proc/PID/cgroup:$wrong"
m=$(value "$cg/memory.max")
[ "$m" = $((96 << 20)) ] && ok memory-max "$m (64 MiB + 32 MiB runtime headroom)" || fail memory-max "memory.max $m, expected $((96 << 20))"
p=$(value "$cg/pids.max")
[ "$p" = 16 ] && ok pids-max "$p" || fail pids-max "pids.max $p"
c=$(value "$cg/cpu.max")
[ "$c" = "50000 100000" ] && ok cpu-max "$c" || fail cpu-max "cpu.max $c"

# stats: one sample of the running container, from the v2 files, once it is up.
for _ in $(seq 1 300); do
  [ -n "$procs" ] || break
  wrun logs lim 2>/dev/null | grep -q "idle ready" && break
  sleep 0.1
done
current=$(value "$cg/memory.current"); pcur=$(value "$cg/pids.current")
stats=$(wrun stats --no-stream lim 2>&1); rc=$?
row=$(echo "$stats" | grep " lim ")
set -- $row
# CONTAINER ID, NAME, CPU %, MEM USAGE, /, LIMIT, MEM %, PIDS
if [ $rc -eq 0 ] && [ $# -eq 8 ] && [ "$4" != "--" ] && [ "${4#0}" = "$4" ] && [ "$6" != unlimited ] \
  && [ "$7" != "--" ] && [ "$8" -ge 1 ] 2>/dev/null && [ "$8" -le 16 ]; then
  ok stats "$row (memory.current $current, pids.current $pcur)"
else fail stats "exit $rc: $stats (memory.current $current, pids.current $pcur)"; fi

# stop: the container ends and its cgroup goes with it.
out=$(wrun stop lim 2>&1); rc=$?
status=$(field lim Status)
if [ $rc -eq 0 ] && [ "$status" = exited ] && [ ! -e "$cg" ]; then ok stop "status $status"
else fail stop "exit $rc: $out; status $status; cgroup present: $([ -e "$cg" ] && echo yes || echo no)"; fi
# memory-peak: the run's record keeps v2's memory.peak, read before the cgroup went.
peak=$(field lim MemoryPeakBytes)
[ "$peak" -gt 0 ] 2>/dev/null && ok memory-peak "$peak bytes" || fail memory-peak "MemoryPeakBytes $peak"
out=$(wrun rm lim 2>&1) && ok rm || fail rm "$out"

# pids-fork-loop: a native shell forks 64 sleepers under --pids 16 (in a subshell: ash exits
# when a fork fails), then counts its PID namespace's processes without forking.
out=$(wrun run --pids 16 --timeout 60s --rootfs /rootfs sh -c \
  '(n=0; while [ $n -lt 64 ]; do sleep 5 & n=$((n+1)); done) 2>/dev/null; set -- /proc/[0-9]*; echo "started $#"' 2>/tmp/err)
rc=$?
live=${out#started }
if [ $rc -eq 0 ] && [ "$live" -le 16 ] 2>/dev/null && [ "$live" -ge 8 ]; then
  ok pids-fork-loop "$live processes under a limit of 16"
else fail pids-fork-loop "exit $rc, stdout: $out, stderr: $(cat /tmp/err)"; fi

# nested-parent: a --cgroup-parent two levels deep gets the controllers enabled on the way.
id=$(wrun run -d --name nested --cgroup-parent wrun-test/nested --pids 8 /samples/idle.wasm 2>/tmp/err)
rc=$?
p=missing
for _ in $(seq 1 300); do
  [ $rc -eq 0 ] || break
  p=$(value "/sys/fs/cgroup/wrun-test/nested/$id/pids.max")
  [ "$p" != missing ] && break
  sleep 0.1
done
out=$(wrun rm -f nested 2>&1)
left=$(find /sys/fs/cgroup/wrun-test -mindepth 2 -type d 2>/dev/null)
if [ $rc -eq 0 ] && [ "$p" = 8 ] && [ -z "$left" ]; then ok nested-parent "pids.max $p"
else fail nested-parent "exit $rc ($(cat /tmp/err)), pids.max $p, rm -f: $out, left: $left"; fi
# The parents are the caller's to remove (as the host tests' World does).
rmdir /sys/fs/cgroup/wrun-test/nested /sys/fs/cgroup/wrun-test 2>/dev/null

# pooled-limits: `wrun daemon` makes its sandboxes' cgroups without limits, forks each sandbox
# into its own, and applies a claim's limits to them.
WRUN_TIMINGS=1 wrun daemon --pool 1 >/tmp/daemon.log 2>&1 &
daemon=$!
# Ready once a supervisor (the daemon's child) has its sandbox (the daemon's grandchild); the
# sandbox's "ready" crosses two sockets after that, hence the settle (tests/pool.rs does so too).
ready=""
for _ in $(seq 1 300); do
  kill -0 $daemon 2>/dev/null || break
  for supervisor in $(cat /proc/$daemon/task/$daemon/children 2>/dev/null); do
    ready="$ready$(cat /proc/$supervisor/task/$supervisor/children 2>/dev/null)"
  done
  [ -S /state/daemon.sock ] && [ -n "$ready" ] && break
  sleep 0.1
done
sleep 1
id=$(wrun run -d --name pooled --memory 64m --cpus 0.5 --pids 16 /samples/idle.wasm 2>/tmp/err)
rc=$?
path=$(field pooled CgroupPath)
cg=/sys/fs/cgroup/${path:-no-cgroup-path}
limits="$(value "$cg/memory.max") $(value "$cg/pids.max") $(value "$cg/cpu.max")"
procs=$(cat "$cg/cgroup.procs" 2>/dev/null | tr '\n' ' ')
born=$(grep -c "sandbox forked into its cgroup" /tmp/daemon.log)
if [ $rc -eq 0 ] && [ -n "$path" ] && [ "$path" != "wrun/$id" ] && [ "$limits" = "$((96 << 20)) 16 50000 100000" ] && [ -n "$procs" ] && [ "$born" -ge 1 ]; then
  ok pooled-limits "$path: $limits; processes: $procs; sandboxes forked into their cgroups: $born"
else fail pooled-limits "exit $rc ($(cat /tmp/err)), CgroupPath $path (standalone would be wrun/$id), memory.max pids.max cpu.max: $limits, processes: $procs, forked into their cgroups: $born"; fi
wrun stop pooled >/dev/null 2>&1
out=$(wrun rm pooled 2>&1)
kill -TERM $daemon
wait $daemon
rc=$?
if [ $rc -eq 0 ] || [ $rc -eq 143 ]; then ok daemon-stop "exit $rc"
else fail daemon-stop "exit $rc, rm: $out, log: $(cat /tmp/daemon.log)"; fi

# kernel-steps: wrun-bench's row of a start's kernel work alone runs on v2 (its cgroup made
# with the memory and pids controllers, the child forked into it) and leaves no cgroup.
mkdir -p /tmp/kernel-steps-root
out=$(/samples/wrun-kernel-steps /tmp/kernel-steps-root wrun-bench 2>/tmp/err); rc=$?
left=$(ls -d /sys/fs/cgroup/wrun-bench/kernel-steps-* 2>/dev/null)
given=$(value /sys/fs/cgroup/wrun-bench/cgroup.subtree_control)
controllers=no
case " $given " in *" memory "*) case " $given " in *" pids "*) controllers=yes ;; esac ;; esac
if [ $rc -eq 0 ] && [ "$out" = hello ] && [ -z "$left" ] && [ $controllers = yes ]; then
  ok kernel-steps "wrun-bench gives its children: $given"
else fail kernel-steps "exit $rc, stdout: $out, left: $left, wrun-bench gives: $given, stderr: $(cat /tmp/err)"; fi
rmdir /sys/fs/cgroup/wrun-bench

# clean-up: nothing of wrun's is left: containers, cgroups, processes, records, layers, mounts.
left=$(wrun ps -aq 2>&1)
[ -z "$left" ] && ok no-containers || fail no-containers "$left"
cgroups=$(find /sys/fs/cgroup -mindepth 1 -type d | grep -v '^/sys/fs/cgroup/wrun$')
[ -z "$cgroups" ] && ok no-cgroups "$(ls -d /sys/fs/cgroup/*/ 2>/dev/null | tr '\n' ' ')" || fail no-cgroups "$cgroups"
# Every process but this shell (PID 1), kernel threads (PID 2 and its children) and zombies;
# the loop uses only builtins, so it sees no children of its own.
procs=""
for dir in /proc/[0-9]*; do
  pid=${dir#/proc/}
  [ "$pid" = 1 ] || [ "$pid" = 2 ] && continue
  read -r stat < "$dir/stat" 2>/dev/null || continue
  rest=${stat##*) }
  set -- $rest
  [ "$1" = Z ] || [ "$2" = 2 ] && continue
  procs="$procs $pid:${stat#* }"
done
[ -z "$procs" ] && ok no-processes || fail no-processes "$procs"
records=$(ls -A /state/runs 2>/dev/null; ls -A /state/overlays 2>/dev/null)
[ -z "$records" ] && ok no-records "state root: $(ls -A /state | tr '\n' ' ')" || fail no-records "$records"
mounts=$(grep ' /state/' /proc/self/mountinfo)
[ -z "$mounts" ] && ok no-mounts || fail no-mounts "$mounts"

dmesg | grep -i -E 'oom|killed process' | tail -n 5 | sed 's/^/guest dmesg: /'
echo "cgroup-v2 done: $failed failed"
sync
poweroff -f
