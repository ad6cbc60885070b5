// Schemas written with zod (`z.object({...})`) declare models and inputs; the gateway reads
// those from nango.yaml, so inside the sandbox a schema is accepted as written and `parse`
// returns its input unchanged.
const schema = () =>
    new Proxy(function () {}, {
        get(_, key) {
            if (key === 'parse') return (value) => value;
            if (key === 'safeParse') return (value) => ({ success: true, data: value });
            if (key === 'then') return undefined;
            return schema;
        },
        apply() {
            return schema();
        },
    });
export const z = schema();
export default z;
export const object = z.object;
export const string = z.string;
export const number = z.number;
export const boolean = z.boolean;
export const array = z.array;
export const union = z.union;
export const literal = z.literal;
export const optional = z.optional;
export const nullable = z.nullable;
export const date = z.date;
export const record = z.record;
export const any = z.any;
export const unknown = z.unknown;
// The name is reserved in modules; `z.enum` works as usual.
const enumSchema = z.enum;
export { enumSchema as enum };
