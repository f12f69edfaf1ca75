// The Node SDK's Responses WebSocket client against the server: a streamed text turn, then a
// function call and its output on the same socket. Prints one JSON line: the turns' events.
// Usage: node responses_ws.cjs <base_url> <model>
const { OpenAI } = require('openai');
const { ResponsesWS } = require('openai/resources/responses/ws');

const [baseURL, model] = process.argv.slice(2);
const client = new OpenAI({ baseURL, apiKey: 'sk-client', maxRetries: 0 });
const socket = new ResponsesWS(client);
const WEATHER = {
  type: 'function',
  name: 'get_weather',
  parameters: { type: 'object', properties: { city: { type: 'string' } } },
};
const turns = [];
let current = [];
let next = null;

socket.on('error', (error) => {
  console.error(String(error), JSON.stringify(error.error ?? null), JSON.stringify(current));
  process.exit(1);
});
socket.on('event', (event) => {
  current.push(event);
  if (event.type === 'error' || ['response.completed', 'response.incomplete', 'response.failed'].includes(event.type)) {
    turns.push(current);
    current = [];
    const resolve = next;
    next = null;
    resolve();
  }
});

function turn(event) {
  return new Promise((resolve) => {
    next = resolve;
    socket.send(event);
  });
}

(async () => {
  await turn({ type: 'response.create', model, input: 'Count from 1 to 3.' });
  await turn({ type: 'response.create', model, input: 'Weather in Paris?', tools: [WEATHER] });
  const called = turns[1].at(-1).response;
  const call = called.output[0];
  await turn({
    type: 'response.create',
    model,
    previous_response_id: called.id,
    tools: [WEATHER],
    input: [{ type: 'function_call_output', call_id: call.call_id, output: 'sunny, 21 °C' }],
  });
  socket.close();
  console.log(JSON.stringify(turns));
})();
