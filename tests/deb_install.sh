#!/usr/bin/env bash
# The Debian package on this machine, as a deployer uses it (run by .ci/run, as root):
# install it; check what it installed (binary, models, pinned config, units, service user and
# groups, state folder); `leukoscope-edge check` and a short `leukoscope-edge run` on pictures,
# as the service user and from `/`, so nothing depends on a working directory; then remove it
# and check the database stayed with its sessions.
#
#   tests/deb_install.sh PACKAGE.deb PICTURES_DIR
set -euo pipefail
deb="$(realpath "$1")"
pictures="$2"
config=/etc/leukoscope/leukoscope.toml
db=/var/lib/leukoscope/leukoscope.db
repo_edge="$(realpath "$(dirname "$0")/../target/debug/edge")"

fail() { echo "deb_install: FAILED: $*" >&2; exit 1; }
sessions() { # the database's session list (header and one line per session)
  "$repo_edge" sessions --db "$db" || fail "cannot list the sessions of $db"
}

[ "$(id -u)" = 0 ] || fail "run as root"
# A machine may already hold a database (an earlier install, perhaps of an older schema, which
# the installed program's first run migrates): the checks below count this run's session only.

echo "-- install $deb"
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$deb" >/dev/null
for f in /usr/bin/leukoscope-edge "$config" /usr/share/doc/leukoscope-edge/model-card.md; do
  [ -f "$f" ] || fail "$f not installed"
done
ls /usr/share/leukoscope/models/*.onnx >/dev/null || fail "no models in /usr/share/leukoscope/models"
for m in /usr/share/leukoscope/models/*.onnx; do
  pin="$(sha256sum "$m" | cut -d' ' -f1)"
  grep -q "\"$(basename "$m")\" = \"$pin\"" "$config" || fail "$config does not pin $(basename "$m")"
done
dpkg-query -W -f='${Conffiles}\n' leukoscope-edge | grep -q "$config" || fail "$config is not a conffile"
for unit in leukoscope.service leukoscope-rpicam.service; do
  [ -f "/lib/systemd/system/$unit" ] || [ -f "/usr/lib/systemd/system/$unit" ] || fail "$unit not installed"
done
for group in video dialout gpio i2c; do
  id -nG leukoscope | tr ' ' '\n' | grep -qx "$group" || fail "user leukoscope not in group $group"
done
[ "$(stat -c %U /var/lib/leukoscope)" = leukoscope ] || fail "/var/lib/leukoscope not owned by leukoscope"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
chmod 755 "$work"
mkdir "$work/pictures"
# 12 pictures: more than the default rule's 10 good fields, so the slide gets a verdict.
find "$pictures" -name '*.jpg' | sort | awk 'NR % 50 == 1' | head -12 | xargs -I{} cp {} "$work/pictures/"
chmod -R a+rX "$work/pictures"

echo "-- leukoscope-edge check (service user, from /)"
(cd / && runuser -u leukoscope -- leukoscope-edge check --config "$config" --source "$work/pictures") \
  || fail "leukoscope-edge check did not pass"

echo "-- leukoscope-edge run on 12 pictures (service user, from /)"
out="$(cd / && runuser -u leukoscope -- leukoscope-edge run --config "$config" --source "$work/pictures")" \
  || fail "leukoscope-edge run exited non-zero"
echo "$out" | grep '^SLIDE' || fail "no SLIDE line"
echo "$out" | grep -c '^RESULT' | grep -qx 12 || fail "expected 12 RESULT lines: $out"
slide="$(echo "$out" | sed -n 's/^SLIDE slide=\([^ ]*\) .*/\1/p')"
[ -n "$slide" ] || fail "no slide id in the SLIDE line"
leukoscope-edge sessions --config "$config"
after_run="$(sessions)"
echo "$after_run" | grep -c " $slide " | grep -qx 1 || fail "slide $slide is not one session: $after_run"

echo "-- remove the package: the database stays"
DEBIAN_FRONTEND=noninteractive apt-get remove -y -qq leukoscope-edge >/dev/null
[ ! -e /usr/bin/leukoscope-edge ] || fail "/usr/bin/leukoscope-edge still there after remove"
[ -f "$db" ] || fail "$db removed with the package"
[ "$(sessions)" = "$after_run" ] || fail "sessions lost on remove"
echo "deb_install: installed, checked, screened 12 pictures (slide $slide), removed; $db kept"
