#!/bin/sh
# For clusters without cert-manager: makes a CA and a serving certificate
# for the webhook's Service, and writes into DIR a kustomization of
# deploy/webhook that uses them instead of cert-manager's:
#
#   deploy/webhook/make-ca.sh my-webhook && kubectl apply -k my-webhook
#
# DIR then holds ca.crt, tls.crt, tls.key (the Secret
# healthproxy-webhook-tls) and ca-bundle.patch.yaml (the caBundle of both
# webhooks). Keep DIR out of version control: tls.key is the serving key.
# The certificate is valid for 825 days; run this again before then and
# apply again (the webhook reads the renewed Secret without a restart).
set -eu

dir=${1:?usage: make-ca.sh DIR}
here=$(cd "$(dirname "$0")" && pwd)
service=healthproxy-webhook.healthproxy-system.svc
days=825

mkdir -p "$dir"
cd "$dir"
# kustomize takes a relative path only.
base=$(realpath --relative-to=. "$here")
umask 077
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout ca.key -out ca.crt -days "$days" -subj "/CN=healthproxy-webhook-ca" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout tls.key -out tls.csr -subj "/CN=$service" 2>/dev/null
printf 'subjectAltName=DNS:%s,DNS:%s.cluster.local\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n' \
    "$service" "$service" > tls.ext
openssl x509 -req -in tls.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days "$days" \
    -extfile tls.ext -out tls.crt 2>/dev/null
# The CA's key signs nothing more: it is not kept.
rm -f ca.key ca.srl tls.csr tls.ext
chmod 0644 ca.crt tls.crt

bundle=$(base64 < ca.crt | tr -d '\n')
cat > ca-bundle.patch.yaml <<YAML
- op: add
  path: /webhooks/0/clientConfig/caBundle
  value: $bundle
- op: add
  path: /webhooks/1/clientConfig/caBundle
  value: $bundle
- op: remove
  path: /metadata/annotations/cert-manager.io~1inject-ca-from
YAML
cat > kustomization.yaml <<YAML
# deploy/webhook with a CA made by make-ca.sh instead of cert-manager.
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
namespace: healthproxy-system
resources:
  - $base
patches:
  - patch: |-
      \$patch: delete
      apiVersion: cert-manager.io/v1
      kind: Issuer
      metadata:
        name: healthproxy-webhook
  - patch: |-
      \$patch: delete
      apiVersion: cert-manager.io/v1
      kind: Certificate
      metadata:
        name: healthproxy-webhook
  - path: ca-bundle.patch.yaml
    target:
      kind: MutatingWebhookConfiguration
      name: healthproxy-webhook
secretGenerator:
  - name: healthproxy-webhook-tls
    type: kubernetes.io/tls
    files:
      - tls.crt
      - tls.key
    options:
      disableNameSuffixHash: true
YAML
echo "wrote $dir: kubectl apply -k $dir" >&2
