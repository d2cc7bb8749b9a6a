// spice-html5's own ticket encryption, run under node: prints one ticket per line (hex), as
// its link message carries it (spicemsg.js SpiceLinkAuthTicket.to_buffer: the encrypted bytes,
// zero-padded at the end to 128).
//
//   node ticket.mjs SPICE_HTML5_DIR PUBKEY_DER_HEX PASSWORD COUNT
//
// spice-html5's modules are ES modules without a package.json saying so, and jsbn.js reads
// `navigator` at load: they are copied to a temporary directory that says so, with a stand-in.
import { cpSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

const [dir, derHex, password, countText] = process.argv.slice(2);
const work = mkdtempSync(join(tmpdir(), 'spice-html5-ticket-'));
try {
  cpSync(join(dir, 'ticket.js'), join(work, 'ticket.js'));
  cpSync(join(dir, 'thirdparty'), join(work, 'thirdparty'), { recursive: true });
  writeFileSync(join(work, 'package.json'), '{"type": "module"}\n');
  globalThis.navigator ??= { appName: 'Netscape' };
  globalThis.window ??= globalThis;
  const { create_rsa_from_mb, rsa_encrypt } = await import(pathToFileURL(join(work, 'ticket.js')));
  const der = Buffer.from(derHex, 'hex');
  const key = create_rsa_from_mb(new Uint8Array(der).buffer, 0);
  const lines = [];
  for (let i = 0; i < Number(countText); i++) {
    const encrypted = rsa_encrypt(key, password + String.fromCharCode(0));
    const ticket = Buffer.alloc(128);
    Buffer.from(encrypted.slice(0, 128)).copy(ticket);
    lines.push(ticket.toString('hex'));
  }
  process.stdout.write(lines.join('\n') + '\n');
} finally {
  rmSync(work, { recursive: true, force: true });
}
