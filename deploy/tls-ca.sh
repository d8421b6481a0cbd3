#!/usr/bin/env bash
# A local certificate authority for the bus's TLS, made with the openssl command line:
#
#   ./deploy/tls-ca.sh DIR [DAYS]
#
# writes, in DIR (created mode 0700):
#   ca.key ca.crt          the CA: an ECDSA P-256 key (mode 0600) and its self-signed certificate
#   server.key server.crt  nats-server's key (mode 0600) and certificate for 127.0.0.1 and
#                          localhost, signed by the CA
# valid DAYS days (default 365). Files already there are kept (run it again: nothing changes), so
# a running backbone's clients keep trusting the same CA. Private keys are never printed.
# Clients trust ca.crt (`--nats-ca DIR/ca.crt`); nats-server gets server.crt and server.key
# (`chasqui nats-config --tls-cert --tls-key`). The local backbone and the tests use it; a real
# deployment uses its own PKI.
set -euo pipefail
if [ $# -lt 1 ] || [ $# -gt 2 ]; then sed -n '2,14p' "$0" >&2; exit 2; fi
DIR=$1
DAYS=${2:-365}
command -v openssl >/dev/null || { echo "tls-ca: openssl not found (apt-get install openssl)" >&2; exit 1; }
umask 077
mkdir -p "$DIR"
chmod 700 "$DIR"

newkey() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

if [ ! -f "$DIR/ca.key" ] || [ ! -f "$DIR/ca.crt" ]; then
  newkey "$DIR/ca.key"
  openssl req -x509 -new -key "$DIR/ca.key" -sha256 -days "$DAYS" \
    -subj "/CN=Chasqui local CA $(hostname -s 2>/dev/null || echo local)" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" -out "$DIR/ca.crt" 2>/dev/null
  rm -f "$DIR/server.crt"  # a new CA: the old server certificate no longer chains to it
  echo "tls-ca: made CA $DIR/ca.crt (key $DIR/ca.key, mode 0600)"
fi

if [ ! -f "$DIR/server.key" ] || [ ! -f "$DIR/server.crt" ]; then
  newkey "$DIR/server.key"
  ext=$(mktemp)
  csr=$(mktemp)
  trap 'rm -f "$ext" "$csr"' EXIT
  printf '%s\n' "subjectAltName=IP:127.0.0.1,DNS:localhost" "basicConstraints=critical,CA:FALSE" \
    "keyUsage=critical,digitalSignature" "extendedKeyUsage=serverAuth" >"$ext"
  openssl req -new -key "$DIR/server.key" -subj "/CN=localhost" -out "$csr" 2>/dev/null
  openssl x509 -req -in "$csr" -CA "$DIR/ca.crt" -CAkey "$DIR/ca.key" \
    -set_serial "0x$(openssl rand -hex 16)" -days "$DAYS" -sha256 -extfile "$ext" \
    -out "$DIR/server.crt" 2>/dev/null
  echo "tls-ca: made server certificate $DIR/server.crt for 127.0.0.1, localhost (key $DIR/server.key, mode 0600)"
fi
chmod 644 "$DIR/ca.crt" "$DIR/server.crt"
