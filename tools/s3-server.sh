#!/usr/bin/env bash
# A real S3 server for tests: a single-node Ceph cluster (one monitor, one in-memory "memstore" OSD and
# radosgw) on 127.0.0.1, without cephx auth. Put-if-absent (If-None-Match: *) is native, which LanceDB's
# commits on s3:// need. Debian packages ceph-mon, ceph-osd and radosgw are installed with apt when
# radosgw is missing (root). Starting takes about 15 s.
#
#   tools/s3-server.sh [start] DIR [RGW_PORT]   start a server whose files live in DIR (created; must not
#                                             hold a running server); ports are free loopback ports unless
#                                             RGW_PORT (or MON_PORT in the environment) is given
#   tools/s3-server.sh stop DIR               kill the daemons started in DIR (by the PIDs in DIR/run/*.pid,
#                                             never by name) and remove DIR
#
# When ready it prints "S3 ready: ENDPOINT bucket=... key=... secret=..." and writes DIR/s3.env with
# LANCET_TEST_S3_ENDPOINT, LANCET_TEST_S3_REGION, LANCET_TEST_S3_BUCKET, LANCET_TEST_S3_ACCESS_KEY and
# LANCET_TEST_S3_SECRET (shell syntax, `export`ed: `. DIR/s3.env`).
set -euo pipefail

ACCESS_KEY=LANCETTESTACCESSKEY
SECRET=LANCETTESTSECRETKEY
BUCKET=lancet
REGION=us-east-1

usage() { echo "usage: $0 [start] DIR [RGW_PORT] | $0 stop DIR" >&2; exit 2; }

# Kills every daemon whose PID is in DIR/run/*.pid and whose command line names DIR's ceph.conf (so a
# stale pidfile never kills an unrelated process that reused the PID), waits for them, removes DIR.
stop_dir() {
  local dir=$1 f pid i
  [ -n "$dir" ] || usage
  if [ -d "$dir/run" ]; then
    for f in "$dir"/run/*.pid; do
      [ -f "$f" ] || continue
      pid=$(tr -dc '0-9' <"$f")
      [ -n "$pid" ] || continue
      if [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$dir/ceph.conf"; then
        kill "$pid" 2>/dev/null || true
      fi
    done
    for f in "$dir"/run/*.pid; do
      [ -f "$f" ] || continue
      pid=$(tr -dc '0-9' <"$f")
      [ -n "$pid" ] || continue
      for i in $(seq 50); do
        [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$dir/ceph.conf" || break
        [ "$i" = 30 ] && kill -9 "$pid" 2>/dev/null || true
        sleep 0.1
      done
    done
  fi
  rm -rf "$dir"
}

# A loopback TCP port nothing listens on now (the kernel picks it).
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

port_taken() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

case "${1:-}" in
  stop) [ $# -eq 2 ] || usage; stop_dir "$(cd "$2" 2>/dev/null && pwd || echo "$2")"; exit 0 ;;
  start) shift ;;
  ""|-h|--help) usage ;;
esac
[ $# -ge 1 ] && [ $# -le 2 ] || usage

if ! command -v radosgw >/dev/null 2>&1; then
  echo "s3-server: installing ceph-mon ceph-osd radosgw (apt)" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends ceph-mon ceph-osd radosgw curl python3 >/dev/null
fi
for c in ceph ceph-mon ceph-osd radosgw radosgw-admin monmaptool ceph-authtool curl python3; do
  command -v "$c" >/dev/null 2>&1 || { echo "s3-server: $c is not installed" >&2; exit 1; }
done

mkdir -p "$1"
C=$(cd "$1" && pwd)
if [ -f "$C/ceph.conf" ] && ls "$C"/run/*.pid >/dev/null 2>&1; then
  echo "s3-server: $C already holds a server; stop it first ($0 stop $C)" >&2
  exit 1
fi
RGW_PORT=${2:-$(free_port)}
MON_PORT=${MON_PORT:-$(free_port)}
while [ "$MON_PORT" = "$RGW_PORT" ]; do MON_PORT=$(free_port); done
for p in "$RGW_PORT" "$MON_PORT"; do
  if port_taken "$p"; then echo "s3-server: port $p on 127.0.0.1 is taken" >&2; exit 1; fi
done

# From here on, a failure stops what was started and leaves DIR's logs for the error message.
fail() {
  local rc=$?
  echo "s3-server: start failed (exit $rc); last log lines:" >&2
  tail -n 5 "$C"/log/*.log >&2 2>/dev/null || true
  stop_dir "$C"
  exit "$rc"
}
trap fail ERR

rm -rf "$C"/{mon,osd0,run,log,rgw,ceph.conf,monmap,keyring,s3.env}
mkdir -p "$C"/{mon,osd0,run,log,rgw}
FSID=$(cat /proc/sys/kernel/random/uuid)
# ms * mode = crc: without it radosgw waits 300 s on "failed to fetch mon config" (-13) with auth none.
# mon data avail crit = 0: the monitor refuses to run on a nearly full small disk otherwise.
cat >"$C/ceph.conf" <<CONF
[global]
fsid = $FSID
mon host = v2:127.0.0.1:$MON_PORT
public addr = 127.0.0.1
auth cluster required = none
auth service required = none
auth client required = none
ms mon client mode = crc
ms client mode = crc
ms service mode = crc
ms cluster mode = crc
ms mon service mode = crc
ms mon cluster mode = crc
ms bind msgr1 = false
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
mon allow pool size one = true
mon data avail warn = 1
mon data avail crit = 0
mon warn on pool no redundancy = false
osd crush chooseleaf type = 0
run dir = $C/run
log file = $C/log/\$name.log
admin socket = $C/run/\$name.asok
osd objectstore = memstore
memstore device bytes = 2147483648
[mon]
mon data = $C/mon/\$name
pid file = $C/run/\$name.pid
[osd]
osd data = $C/osd0
osd max object name len = 460
osd max object namespace len = 64
pid file = $C/run/\$name.pid
[client.rgw]
rgw data = $C/rgw
pid file = $C/run/\$name.pid
CONF
CEPH=(ceph -c "$C/ceph.conf" --connect-timeout 20)

t0=$(date +%s.%N)
monmaptool --create --clobber --fsid "$FSID" --addv a "[v2:127.0.0.1:$MON_PORT]" "$C/monmap" >/dev/null
ceph-authtool --create-keyring "$C/keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
ceph-mon -c "$C/ceph.conf" --mkfs -i a --monmap "$C/monmap" --keyring "$C/keyring" 2>>"$C/log/setup.log"
ceph-mon -c "$C/ceph.conf" -i a 2>>"$C/log/setup.log"            # daemonizes; pid in run/mon.a.pid
OSD_UUID=$(cat /proc/sys/kernel/random/uuid)
timeout 60 "${CEPH[@]}" osd new "$OSD_UUID" >/dev/null 2>>"$C/log/setup.log"
ceph-osd -c "$C/ceph.conf" -i 0 --mkfs --osd-uuid "$OSD_UUID" >>"$C/log/setup.log" 2>&1
ceph-osd -c "$C/ceph.conf" -i 0 >>"$C/log/setup.log" 2>&1         # daemonizes; pid in run/osd.0.pid
up=
for _ in $(seq 120); do
  if timeout 10 "${CEPH[@]}" osd stat 2>/dev/null | grep -q ' 1 up'; then up=1; break; fi
  sleep 0.25
done
[ -n "$up" ] || { echo "s3-server: the OSD did not come up" >&2; false; }
radosgw -c "$C/ceph.conf" -n client.rgw --rgw-frontends "beast endpoint=127.0.0.1:$RGW_PORT" 2>>"$C/log/setup.log"   # daemonizes; pid in run/client.rgw.pid
up=
for _ in $(seq 240); do
  if curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$RGW_PORT/"; then up=1; break; fi
  sleep 0.25
done
[ -n "$up" ] || { echo "s3-server: radosgw did not answer on port $RGW_PORT" >&2; false; }
timeout 60 radosgw-admin -c "$C/ceph.conf" user create --uid=lancet-test --display-name=lancet-test \
  --access-key="$ACCESS_KEY" --secret="$SECRET" >/dev/null 2>>"$C/log/setup.log"
ENDPOINT="http://127.0.0.1:$RGW_PORT"
# The payload hash header is needed: curl's --aws-sigv4 does not send one and radosgw rejects that.
curl -sf --max-time 20 --aws-sigv4 "aws:amz:$REGION:s3" --user "$ACCESS_KEY:$SECRET" \
  -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" -X PUT "$ENDPOINT/$BUCKET" >/dev/null
trap - ERR

cat >"$C/s3.env" <<ENV
export LANCET_TEST_S3_ENDPOINT=$ENDPOINT
export LANCET_TEST_S3_REGION=$REGION
export LANCET_TEST_S3_BUCKET=$BUCKET
export LANCET_TEST_S3_ACCESS_KEY=$ACCESS_KEY
export LANCET_TEST_S3_SECRET=$SECRET
ENV
secs=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
echo "S3 ready: $ENDPOINT bucket=$BUCKET key=$ACCESS_KEY secret=$SECRET (mon port $MON_PORT, ${secs} s, env in $C/s3.env, stop: $0 stop $C)"
