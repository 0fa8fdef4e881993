# test/fresh.sh — sourced by test/run.sh: makes this machine look, to the
# tests, like a new one of the kind CI runs on, so that a suite that uses a
# tool it never installs fails here and not on the next newcomer's machine.
#
#   fresh_setup DIR   builds DIR/bin and prints one line saying what it hid;
#                     the caller then sets PATH=DIR/bin
#   fresh_reset       DIR/bin as fresh_setup left it: what a suite installed
#                     is hidden again from the next one
#
# DIR/bin holds a symlink for every command of the current PATH except
# those that Debian packages not on a new machine provide: a new machine's
# packages are listed in test/fresh-machine.packages (dpkg-query -W on a new
# machine of the CI kind). Commands that no package owns (Go under
# /usr/local/go, the user's own) stay. So gst-launch-1.0, qemu or nc, once
# installed by hand, are hidden again on every run, and need (test/lib.sh)
# goes through apt-get for them exactly as on a new machine.
#
# DIR/bin/apt-get wraps the real one: after a successful `install` it links
# the commands of the named packages and of what they depend on into
# DIR/bin, the way installing makes them appear. Anything that installs
# through apt-get (need, the demo) works unchanged.
#
# Only commands are hidden: libraries and plugins of packages installed by
# hand (GStreamer's, say) stay where they are.

# fresh_bins DIRS...: "NAME<TAB>PATH<TAB>REALPATH" of every command in
# DIRS, the first of each name in DIRS' order.
fresh_bins() {
  local d
  for d in "$@"; do
    [ -d "$d" ] || continue
    find "$d/" -mindepth 1 -maxdepth 1 \( -type f -o -xtype f \) -printf '%f\t%p\n'
  done | awk -F'\t' '!seen[$1]++' >"$fresh_dir/names"
  cut -f2 "$fresh_dir/names" | xargs -r -d '\n' realpath -m -- | paste "$fresh_dir/names" -
}

# fresh_pick SETFILE PROGRAM: awk PROGRAM over the table on stdin, with
# set[] holding SETFILE's lines (which may be none).
fresh_pick() {
  awk -F'\t' -v setfile="$1" 'BEGIN { while ((getline line <setfile) > 0) set[line] = 1 }'"$2"
}

# fresh_pkg_bins PKG...: real paths of the commands PKG... install.
fresh_pkg_bins() {
  dpkg-query -L "$@" 2>/dev/null | grep -E '/s?bin/[^/]+$' | xargs -r -d '\n' realpath -m --
}

fresh_setup() {
  fresh_dir=$1
  local top
  top=$(pwd)
  mkdir -p "$fresh_dir/bin"
  local path_dirs
  IFS=: read -r -a path_dirs <<<"$PATH"
  printf '%s\n' "${path_dirs[@]}" >"$fresh_dir/path"

  # Packages installed here that a new machine does not have.
  dpkg-query -W -f '${db:Status-Abbrev} ${Package}\n' | awk '$1 == "ii" { print $2 }' | sort -u >"$fresh_dir/installed"
  grep -v '^#' "$top/test/fresh-machine.packages" | awk '{ print $1 }' | sort -u >"$fresh_dir/baseline"
  comm -23 "$fresh_dir/installed" "$fresh_dir/baseline" >"$fresh_dir/extra"
  if [ -s "$fresh_dir/extra" ]; then
    xargs -r -a "$fresh_dir/extra" -d '\n' dpkg-query -L 2>/dev/null | grep -E '/s?bin/[^/]+$' |
      xargs -r -d '\n' realpath -m -- | sort -u >"$fresh_dir/hidden"
  else
    : >"$fresh_dir/hidden"
  fi
  fresh_bins "${path_dirs[@]}" >"$fresh_dir/table"
  fresh_pick "$fresh_dir/hidden" '!($3 in set) { print $2 }' <"$fresh_dir/table" >"$fresh_dir/visible"
  xargs -r -a "$fresh_dir/visible" -d '\n' cp -s -t "$fresh_dir/bin" --

  local real_apt
  real_apt=$(command -v apt-get)
  # The shim carries what it needs: it runs in the suites' processes. (rm
  # first: bin/apt-get is a symlink to the real one, which must not be
  # written through.)
  rm -f "$fresh_dir/bin/apt-get"
  cat >"$fresh_dir/bin/apt-get" <<EOF
#!/usr/bin/env bash
# apt-get as on a new machine: the real one, then the commands of what was
# installed appear on this PATH (see test/fresh.sh).
$real_apt "\$@" || exit
install=0 pkgs=()
for a in "\$@"; do
  case \$a in
    install) install=1 ;;
    -*) ;;
    *) [ \$install = 1 ] && pkgs+=("\${a%%=*}") ;;
  esac
done
[ \$install = 1 ] && [ \${#pkgs[@]} -gt 0 ] || exit 0
$(declare -f fresh_bins fresh_pick fresh_pkg_bins)
fresh_dir=$fresh_dir
closure=\$(apt-cache depends --recurse --installed --no-recommends --no-suggests --no-conflicts \\
  --no-breaks --no-replaces --no-enhances "\${pkgs[@]}" 2>/dev/null | grep -v '^[ <]' | sort -u)
mapfile -t dirs <"\$fresh_dir/path"
fresh_pkg_bins \$closure | sort -u >"\$fresh_dir/appeared"
fresh_bins "\${dirs[@]}" | fresh_pick "\$fresh_dir/appeared" '\$3 in set { print \$1 "\t" \$2 }' | while IFS=\$'\t' read -r name path; do
  [ -e "\$fresh_dir/bin/\$name" ] || ln -s "\$path" "\$fresh_dir/bin/\$name"
done
exit 0
EOF
  chmod 755 "$fresh_dir/bin/apt-get"
  cp -a "$fresh_dir/bin" "$fresh_dir/bin.new"
  # What it hid must be gone from the new PATH, and apt-get must be the shim.
  local name leaked=
  for name in $(fresh_pick "$fresh_dir/hidden" '$3 in set { print $1 }' <"$fresh_dir/table"); do
    PATH=$fresh_dir/bin command -v "$name" >/dev/null && leaked="$leaked $name"
  done
  if [ -n "$leaked" ] || [ "$(PATH=$fresh_dir/bin command -v apt-get)" != "$fresh_dir/bin/apt-get" ]; then
    echo "the fresh PATH still shows${leaked:- a real apt-get}"
    return 1
  fi
  local c
  for c in bash sed go; do
    if ! PATH=$fresh_dir/bin command -v "$c" >/dev/null; then
      echo "the fresh PATH lacks $c, which a new machine has"
      return 1
    fi
  done
  printf '%d packages not on a new machine, %d of their commands hidden, %d commands visible\n' \
    "$(wc -l <"$fresh_dir/extra")" "$(wc -l <"$fresh_dir/hidden")" "$(wc -l <"$fresh_dir/visible")"
}

fresh_reset() {
  [ -n "${fresh_dir:-}" ] && [ -d "$fresh_dir/bin.new" ] || return 0
  rm -rf "$fresh_dir/bin" && cp -a "$fresh_dir/bin.new" "$fresh_dir/bin"
}
