import { chmod, readFile, writeFile } from 'node:fs/promises';
import sodium from 'libsodium-wrappers';

// The tokenizer's key pair and NaCl anonymous sealed boxes (libsodium's crypto_box_seal, which is
// what Fly's tokenizer and its clients use: RbNaCl's Boxes::Sealed, Go's box.SealAnonymous). The
// private key is Fly's OPEN_KEY format, 32 bytes as hex, in one mode-600 file of the data dir;
// the public key ("seal key") is its X25519 public half, as hex.

export class SealingKeys {
  readonly #privateKey: Uint8Array;
  readonly publicKey: Uint8Array;

  private constructor(privateKey: Uint8Array) {
    this.#privateKey = privateKey;
    this.publicKey = sodium.crypto_scalarmult_base(privateKey);
  }

  /** Reads the key at `path`, or makes one there (mode 600) on first start. */
  static async open(path: string): Promise<SealingKeys> {
    await sodium.ready;
    const existing = await readFile(path, 'utf8').then((t) => t.trim(), () => '');
    if (existing) {
      if (!/^[0-9a-f]{64}$/i.test(existing)) throw new Error(`${path} is not a 32-byte hex key`);
      await chmod(path, 0o600);
      return new SealingKeys(sodium.from_hex(existing));
    }
    const key = sodium.crypto_box_keypair().privateKey;
    await writeFile(path, sodium.to_hex(key) + '\n', { mode: 0o600, flag: 'wx' });
    return new SealingKeys(key);
  }

  get sealKeyHex(): string {
    return sodium.to_hex(this.publicKey);
  }

  /** Base64 of the sealed box, as sent in Proxy-Tokenizer. */
  seal(plaintext: string): string {
    return sodium.to_base64(sodium.crypto_box_seal(plaintext, this.publicKey), sodium.base64_variants.ORIGINAL);
  }

  /** The plaintext of a base64 sealed box, or undefined when it is not one sealed to this key. */
  open(base64: string): Uint8Array | undefined {
    let box: Uint8Array;
    try {
      box = Buffer.from(base64.replace(/\s+/g, ''), 'base64');
      return sodium.crypto_box_seal_open(box, this.publicKey, this.#privateKey);
    } catch {
      return undefined;
    }
  }
}

