#!/bin/sh
# Installs the Debian packages smtpflow's commands and tests use, only those missing.
# Needs root (or passwordless sudo). Safe to run again: it does nothing when all is there.
set -e

need=""
have() { command -v "$1" >/dev/null 2>&1; }
have tshark   || need="$need tshark"
have editcap  || need="$need wireshark-common"   # tests cut captures with it (--since/--until)
have tcpdump  || need="$need tcpdump"
have nft      || need="$need nftables"
have iptables || need="$need iptables"
have ip       || need="$need iproute2"
have gcc      || need="$need build-essential"
have chromium || need="$need chromium fonts-dejavu-core"   # the HTML report's browser test
python3 -c 'import venv, ensurepip' 2>/dev/null || need="$need python3-venv"
[ -e /usr/include/python3.11/Python.h ] || python3 -c 'import sysconfig,os,sys; sys.exit(0 if os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")) else 1)' || need="$need python3-dev"

if [ -z "$need" ]; then
    exit 0
fi

SUDO=""
if [ "$(id -u)" != 0 ]; then
    if have sudo; then SUDO="sudo"; else
        echo "smtpflow: these Debian packages are missing:$need" >&2
        echo "smtpflow: run this script as root (or install them) and try again" >&2
        exit 1
    fi
fi

echo "smtpflow: installing Debian packages:$need"
export DEBIAN_FRONTEND=noninteractive
# tshark asks whether non-root users may capture; answer "no" without a prompt.
echo "wireshark-common wireshark-common/install-setuid boolean false" | $SUDO debconf-set-selections
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends $need >/dev/null
