// Drives a live corral with Ollama's official JavaScript client, unchanged, and prints what each
// call returned as one JSON object; tests/test_ollama_js_client.py makes the assertions.
// Usage: node client.mjs <host> <chat model> <base model>
import { Ollama } from 'ollama'

const [host, model, base] = process.argv.slice(2)
const ollama = new Ollama({ host })
const greedy = { temperature: 0, num_predict: 12 }
const out = {}

out.version = await ollama.version()
out.list = (await ollama.list()).models.map((m) => m.name)
out.show = await ollama.show({ model })

out.generate = await ollama.generate({ model: base, prompt: '1, 2, 3,', options: greedy })
let streamed = ''
let last
for await (const part of await ollama.generate({ model: base, prompt: '1, 2, 3,', options: greedy, stream: true })) {
  streamed += part.response
  last = part
}
out.generateStream = { text: streamed, last }

const messages = [{ role: 'user', content: 'Name a color.' }]
out.chat = await ollama.chat({ model, messages, options: greedy })
let chatText = ''
let parts = 0
for await (const part of await ollama.chat({ model, messages, options: greedy, stream: true })) {
  chatText += part.message.content
  parts += 1
}
out.chatStream = { text: chatText, parts }

const schema = { type: 'object', properties: { color: { enum: ['red', 'blue'] } }, required: ['color'] }
out.json = await ollama.chat({ model, messages: [{ role: 'user', content: 'Pick a color.' }],
  format: schema, options: { temperature: 0, num_predict: 40 } })

out.embed = await ollama.embed({ model, input: ['hello', 'world'] })
out.ps = (await ollama.ps()).models.map((m) => ({ name: m.name, expires_at: m.expires_at, size_vram: m.size_vram }))

out.create = await ollama.create({ model: 'js-client:test', from: model, system: 'Answer in one word.' })
out.copy = await ollama.copy({ source: 'js-client:test', destination: 'js-client:copy' })
out.afterCreate = (await ollama.list()).models.map((m) => m.name)
out.createdSystem = (await ollama.show({ model: 'js-client:copy' })).system
await ollama.delete({ model: 'js-client:test' })
await ollama.delete({ model: 'js-client:copy' })
out.afterDelete = (await ollama.list()).models.map((m) => m.name)

// An abort mid-stream: the client's abort() ends the iteration with an AbortError.
const stream = await ollama.generate({ model: base, prompt: 'Once upon a time', options: { num_predict: 500 }, stream: true })
let seen = 0
try {
  for await (const part of stream) {
    seen += 1
    if (seen === 3) stream.abort()
  }
  out.abort = { seen, error: null }
} catch (err) {
  out.abort = { seen, error: err.name }
}

// Errors come back as ResponseError with the server's text and status.
try {
  await ollama.generate({ model: 'no-such-model:1', prompt: 'x' })
  out.notFound = null
} catch (err) {
  out.notFound = { name: err.name, error: err.error, status: err.status_code }
}

console.log(JSON.stringify(out))
