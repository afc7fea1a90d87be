// Starts the SCIM benchmark's peer: scimgateway (npm package, installed here by
// `scripts/install-deps.sh --bench`) with its in-memory plugin, plugin-loki
// (`persistence: false`: a LokiJS memory adapter, nothing on disk).
//
// Usage: BENCH_TOKEN=... node bench/scimgateway/start.mjs --port N --dir WORKDIR
//
// scimgateway finds a plugin's configuration at <plugin's folder>/../config/<plugin>.json
// and writes its logs to <plugin's folder>/../logs. So that neither lands in
// node_modules, this lays out WORKDIR the way scimgateway's own postinstall lays out a
// project (skipped here, it needs Bun):
//   WORKDIR/lib/plugin-loki.ts       the package's plugin, unchanged
//   WORKDIR/config/plugin-loki.json  config/plugin-loki.json with the port set
//   WORKDIR/node_modules             -> this folder's node_modules
//   WORKDIR/package.json             {"type": "module"}, as the postinstall sets it
// and runs the plugin on Node through tsx (scimgateway 6.1 is TypeScript; Node's own
// type stripping refuses files under node_modules).
//
// config/plugin-loki.json: bearer token from $BENCH_TOKEN (as wrk sends it), no basic
// auth, no TLS, log file off and console at error (so logging does not dominate), and
// localhostonly, which binds "localhost": resolved IPv4 first here, so 127.0.0.1.
import dns from 'node:dns'
import fs from 'node:fs'
import path from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'

const here = path.dirname(fileURLToPath(import.meta.url))
const args = process.argv.slice(2)
const arg = (name) => {
  const i = args.indexOf(name)
  if (i < 0 || !args[i + 1]) throw new Error(`start.mjs: ${name} is required`)
  return args[i + 1]
}
const port = Number(arg('--port'))
const dir = path.resolve(arg('--dir'))
if (!process.env.BENCH_TOKEN) throw new Error('start.mjs: BENCH_TOKEN is not set')

const pkg = path.join(here, 'node_modules', 'scimgateway')
fs.mkdirSync(path.join(dir, 'lib'), { recursive: true })
fs.mkdirSync(path.join(dir, 'config'), { recursive: true })
fs.copyFileSync(path.join(pkg, 'lib', 'plugin-loki.ts'), path.join(dir, 'lib', 'plugin-loki.ts'))
const config = JSON.parse(fs.readFileSync(path.join(here, 'config', 'plugin-loki.json'), 'utf8'))
config.scimgateway.port = port
fs.writeFileSync(path.join(dir, 'config', 'plugin-loki.json'), JSON.stringify(config, null, 2))
fs.writeFileSync(path.join(dir, 'package.json'), '{"type": "module"}\n')
if (!fs.existsSync(path.join(dir, 'node_modules'))) {
  fs.symlinkSync(path.join(here, 'node_modules'), path.join(dir, 'node_modules'), 'dir')
}

dns.setDefaultResultOrder('ipv4first')
const { register } = await import('tsx/esm/api')
register()
await import(pathToFileURL(path.join(dir, 'lib', 'plugin-loki.ts')).href)
