import { Type } from '@sinclair/typebox'

/** The one error shape of every HTTP reply (plugins/error-handler.ts). */
export const ErrorReply = Type.Object({ statusCode: Type.Integer(), error: Type.String(), message: Type.String() })

/** Where a channel's stream stands. */
export const Position = Type.Object({ offset: Type.Integer(), epoch: Type.String() })
