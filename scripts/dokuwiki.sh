#!/usr/bin/env bash
# Installs Debian's DokuWiki and the PHP command line (whose built-in web server the
# end-to-end tests run it with) when either is missing. Idempotent: does nothing when
# both are there. Needs root (or sudo) and Debian's package archive.
#
# Layout of Debian's package (bookworm, dokuwiki 0.0.20220731.a):
#   /usr/share/dokuwiki   code (doku.php, inc/, lib/, vendor/); inc/preload.php points
#                         DOKU_CONF at /etc/dokuwiki; lib/plugins and lib/tpl are
#                         symlinks into /var/lib/dokuwiki/lib
#   /etc/dokuwiki         conf (dokuwiki.php, local.php, plugins*.php, …); acl.auth.php
#                         and users.auth.php are symlinks into /var/lib/dokuwiki/acl
#   /var/lib/dokuwiki     data/ (savedir), acl/, lib/plugins, lib/tpl
# The tests never change these: tests/support/dokuwiki.rs copies the tree per instance.
set -euo pipefail
need=()
[ -f /usr/share/dokuwiki/doku.php ] || need+=(dokuwiki)
command -v php >/dev/null 2>&1 || need+=(php-cli)
[ ${#need[@]} -eq 0 ] && exit 0
echo "dokuwiki.sh: apt-get install ${need[*]}" >&2
SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
# Several test binaries may call this at once: wait for dpkg's lock instead of failing.
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 update -qq
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${need[@]}" >/dev/null
[ -f /usr/share/dokuwiki/doku.php ] && command -v php >/dev/null 2>&1
